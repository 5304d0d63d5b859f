use signpost_adapter_hl7v2::ack::{self, AckCode, AckParseError, ErrorCode, ErrorDetail};
use signpost_adapter_hl7v2::message::{Location, Message};
use signpost_adapter_hl7v2::ref_i12::{self, MapOptions};

use crate::helpers::{fixture, AT};

/// ACKs with `\r` shown as line breaks, for snapshots.
fn lines(text: &str) -> String {
    text.replace('\r', "\n")
}

fn ack_for(name: &str) -> (Message, String) {
    let inbound = Message::parse(&fixture(name)).unwrap();
    let text = match ref_i12::map(&inbound, &MapOptions::default()) {
        Ok(_) => ack::build(&inbound, AckCode::Accept, &[], "ACK-1", AT),
        Err(e) => ack::build(&inbound, e.code().ack_code(), &[(&e).into()], "ACK-1", AT),
    };
    (inbound, text)
}

#[test]
fn an_accepted_referral_gets_aa_with_sender_and_receiver_swapped() {
    let (_, text) = ack_for("ref-i12-emis.hl7");
    insta::assert_snapshot!(lines(&text), @r"
    MSH|^~\&|SIGNPOST|SIGNPOST|EMIS|A81001|20261121100000+0000||ACK^I12^ACK|ACK-1|P|2.5
    MSA|AA|EMIS-000123
    ");
    let ack = Message::parse(&text).unwrap();
    assert_eq!(ack.message_type().to_string(), "ACK^I12");
}

#[test]
fn a_bad_nhs_number_gets_ae_with_an_err_segment_and_no_patient_data() {
    let (_, text) = ack_for("ref-i12-bad-check-digit.hl7");
    insta::assert_snapshot!(lines(&text), @r"
    MSH|^~\&|SIGNPOST|SIGNPOST|EMIS|A81001|20261121100000+0000||ACK^I12^ACK|ACK-1|P|2.5
    MSA|AE|EMIS-000125|PID-3: the NHS number's check digit is wrong
    ERR||PID^1^3|102^Data type error^HL70357|E||||PID-3: the NHS number's check digit is wrong
    ");
    assert!(!text.contains("9990000019"));
    assert!(!text.contains("Example"));
}

#[test]
fn a_missing_nhs_number_is_101_at_pid_3() {
    let (_, text) = ack_for("ref-i12-no-nhs-number.hl7");
    let reply = ack::parse(&text).unwrap();
    assert_eq!(reply.code, AckCode::Error);
    assert_eq!(reply.acknowledged_control_id, "EMIS-000124");
    assert_eq!(
        reply.errors,
        ["101 PID-3 has no NHS number (a repetition with identifier type NH or assigning authority NHS) at PID-3"]
    );
}

#[test]
fn an_unsupported_message_type_is_rejected_with_ar() {
    let (_, text) = ack_for("adt-a01.hl7");
    insta::assert_snapshot!(lines(&text), @r"
    MSH|^~\&|SIGNPOST|SIGNPOST|EMIS|A81001|20261121100000+0000||ACK^A01^ACK|ACK-1|P|2.5
    MSA|AR|EMIS-000126|message type ADT\S\A01 is not supported here (only REF\S\I12)
    ERR||MSH^1^9|200^Unsupported message type^HL70357|E||||message type ADT\S\A01 is not supported here (only REF\S\I12)
    ");
    let (_, text) = ack_for("ref-i14-cancel.hl7");
    assert_eq!(ack::parse(&text).unwrap().code, AckCode::Reject);
    assert!(text.contains("|201^Unsupported event code^HL70357|"));
}

#[test]
fn a_sender_older_than_2_5_also_gets_err_1() {
    let inbound = Message::parse(&fixture("ref-i12-systmone.hl7")).unwrap();
    let error = ErrorDetail {
        code: ErrorCode::RequiredFieldMissing,
        location: Some(Location::field("PID", 7)),
        text: "PID-7 (date of birth) is required".into(),
    };
    let text = ack::build(&inbound, AckCode::Error, &[error], "ACK-2", AT);
    insta::assert_snapshot!(lines(&text), @r"
    MSH|^~\&|SIGNPOST|SIGNPOST|SystmOne|A81002|20261121100000+0000||ACK^I12^ACK|ACK-2|P|2.4
    MSA|AE|S1-9F3A-0042|PID-7 (date of birth) is required
    ERR|PID^1^7^101&Required field missing&HL70357|PID^1^7|101^Required field missing^HL70357|E||||PID-7 (date of birth) is required
    ");
}

#[test]
fn an_internal_error_asks_the_sender_to_resend_later() {
    assert_eq!(
        ErrorCode::ApplicationInternalError.ack_code(),
        AckCode::Reject
    );
    assert_eq!(ErrorCode::ApplicationInternalError.code(), 207);
    assert_eq!(ErrorCode::DataTypeError.ack_code(), AckCode::Error);
    let inbound = Message::parse(&fixture("ref-i12-emis.hl7")).unwrap();
    let error = ErrorDetail {
        code: ErrorCode::ApplicationInternalError,
        location: None,
        text: "Signpost could not take the referral now; send it again later".into(),
    };
    let text = ack::build(&inbound, error.code.ack_code(), &[error], "ACK-3", AT);
    assert!(text.contains("\rERR|||207^Application internal error^HL70357|E||||Signpost could not"));
    assert!(text.contains("\rMSA|AR|EMIS-000123|"));
}

#[test]
fn text_that_does_not_parse_is_rejected_echoing_what_can_be_read() {
    let raw = "MSH|^~|EMIS|A81001|SIGNPOST|SIGNPOST|20261120||REF^I12|EMIS-77|P|2.5\rPID|1\r";
    let error = Message::parse(raw).unwrap_err();
    let text = ack::reject_unparsable(raw, &error, "ACK-4", AT);
    insta::assert_snapshot!(lines(&text), @r"
    MSH|^~\&|SIGNPOST|SIGNPOST|EMIS|A81001|20261121100000+0000||ACK^^ACK|ACK-4|P|2.5
    MSA|AR|EMIS-77|MSH-2 (encoding characters) must be four or five distinct separator characters
    ERR||MSH^1^2|102^Data type error^HL70357|E||||MSH-2 (encoding characters) must be four or five distinct separator characters
    ");
    let garbage = "hello";
    let text = ack::reject_unparsable(garbage, &Message::parse(garbage).unwrap_err(), "ACK-5", AT);
    let reply = ack::parse(&text).unwrap();
    assert_eq!(reply.code, AckCode::Reject);
    assert_eq!(reply.acknowledged_control_id, "");
}

#[test]
fn acks_from_other_systems_are_read() {
    let aa = "MSH|^~\\&|GPSYS|A81001|SIGNPOST|SIGNPOST|20261121||ACK^T02|X1|P|2.3\rMSA|AA|MDM-1\r";
    let reply = ack::parse(aa).unwrap();
    assert_eq!(
        (reply.code, reply.acknowledged_control_id.as_str()),
        (AckCode::Accept, "MDM-1")
    );
    assert!(reply.errors.is_empty());

    let legacy = "MSH|^~\\&|GPSYS|A81001|SIGNPOST|SIGNPOST|20261121||ACK|X2|P|2.3\nMSA|AE|MDM-2|Patient not found\nERR|PID^1^3^204&Unknown key identifier&HL70357\n";
    let reply = ack::parse(legacy).unwrap();
    assert_eq!(reply.code, AckCode::Error);
    assert_eq!(reply.errors, ["204 Unknown key identifier"]);

    let msa_only = "MSH|^~\\&|GPSYS|A81001|||20261121||ACK|X3|P|2.3\rMSA|CR|MDM-3|Try later\r";
    let reply = ack::parse(msa_only).unwrap();
    assert_eq!(reply.code, AckCode::Reject);
    assert_eq!(reply.errors, ["Try later"]);

    assert_eq!(
        ack::parse("MSH|^~\\&|A|B|C|D|1||ACK|1|P|2.5\r"),
        Err(AckParseError::NoMsa)
    );
    assert_eq!(
        ack::parse("MSH|^~\\&|A|B|C|D|1||ACK|1|P|2.5\rMSA|OK|1\r"),
        Err(AckParseError::BadCode)
    );
    assert!(matches!(
        ack::parse("nonsense"),
        Err(AckParseError::Parse(_))
    ));
}
