use signpost_adapter_hl7v2::message::{Field, Location, Message, ParseError, Segment};

use crate::helpers::fixture;

#[test]
fn cr_lf_and_crlf_terminators_give_the_same_message() {
    let cr = fixture("ref-i12-emis.hl7");
    assert!(cr.contains('\r') && !cr.contains('\n'));
    let lf = cr.replace('\r', "\n");
    let crlf = cr.replace('\r', "\r\n");
    let a = Message::parse(&cr).unwrap();
    assert_eq!(a.segments().len(), 9);
    assert_eq!(a, Message::parse(&lf).unwrap());
    assert_eq!(a, Message::parse(&crlf).unwrap());
}

#[test]
fn msh_fields_are_numbered_as_hl7_numbers_them() {
    let m = Message::parse(&fixture("ref-i12-emis.hl7")).unwrap();
    assert_eq!(m.get("MSH", 1)[0].component(1), "|");
    assert_eq!(m.get("MSH", 2)[0].component(1), "^~\\&");
    assert_eq!(m.get("MSH", 3)[0].component(1), "EMIS");
    let kind = m.message_type();
    assert_eq!(
        (
            kind.code.as_str(),
            kind.trigger.as_str(),
            kind.structure.as_str()
        ),
        ("REF", "I12", "REF_I12")
    );
    assert_eq!(kind.to_string(), "REF^I12");
    assert_eq!(m.control_id(), "EMIS-000123");
    assert_eq!(m.version(), "2.5");
    assert_eq!(m.segment("PID").unwrap().value(7, 1), "19480314");
    assert!(
        m.get("PID", 2).is_empty(),
        "an empty field has no repetitions"
    );
    assert!(m.get("PID", 99).is_empty(), "past the end is empty too");
    assert!(
        m.get("ZZZ", 1).is_empty(),
        "so is a segment that is not there"
    );
    assert_eq!(m.segments_named("PRD").count(), 2);
}

#[test]
fn repeated_fields_keep_their_repetitions_in_order() {
    let m = Message::parse(&fixture("ref-i12-systmone.hl7")).unwrap();
    let ids = m.get("PID", 3);
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0].component(1), "T0012345");
    assert_eq!(ids[0].component(4), "TPP");
    assert_eq!(ids[0].component(5), "PI");
    assert_eq!(ids[1].component(1), "9990000026");
    assert_eq!(ids[1].component(4), "NHS");
    assert_eq!(ids[1].component(5), "");
}

#[test]
fn escape_sequences_are_decoded_once_into_values() {
    let m = Message::parse(&fixture("ref-i12-systmone.hl7")).unwrap();
    let notes: Vec<&str> = m.segments_named("NTE").map(|s| s.value(3, 1)).collect();
    assert_eq!(
        notes,
        [
            "Money worries: owes £300 rent & council tax",
            "Lonely since moving\nAsked about: walking group|gardening \\ choir ^ lunch club",
        ]
    );
    // \S\ inside a component is a caret in the value, not a component break.
    let address = &m.get("PID", 11)[0];
    assert_eq!(address.component(1), "Flat 2^3 Mill Lane");
    assert_eq!(address.component(2), "Hillview Estate");
}

#[test]
fn subcomponents_are_reachable() {
    let m = Message::parse(
        "MSH|^~\\&|A|B|C|D|20261120||REF^I12|1|P|2.5\rPID|1||9990000018^^^NHS&2.16.840.1.113883.2.1.4.1&ISO^NH\r",
    )
    .unwrap();
    let cx = &m.get("PID", 3)[0];
    assert_eq!(cx.component(4), "NHS");
    assert_eq!(cx.subcomponent(4, 2), "2.16.840.1.113883.2.1.4.1");
    assert_eq!(cx.subcomponent(4, 3), "ISO");
    assert_eq!(cx.components()[3].subcomponents().len(), 3);
}

#[test]
fn delimiters_come_from_msh_1_and_msh_2() {
    let text =
        "MSH#*$!@#APP#FAC#RAPP#RFAC#20261120##REF*I12#42#P#2.5\rNTE#1#P#a!b$c@d*e|f^g~h&i\\j!!k\r";
    let m = Message::parse(text).unwrap();
    assert_eq!(m.delimiters().field(), '#');
    assert_eq!(m.delimiters().component(), '*');
    assert_eq!(m.delimiters().repetition(), '$');
    assert_eq!(m.delimiters().escape(), '!');
    assert_eq!(m.delimiters().subcomponent(), '@');
    assert_eq!(m.message_type().trigger, "I12");
    let reps = m.get("NTE", 3);
    assert_eq!(reps.len(), 2);
    assert_eq!(reps[0].component(1), "a!b");
    assert_eq!(reps[1].subcomponent(1, 1), "c");
    assert_eq!(reps[1].subcomponent(1, 2), "d");
    // Standard delimiters are plain text under these, and !!k is an empty escape kept as is.
    assert_eq!(reps[1].component(2), "e|f^g~h&i\\j!!k");
}

#[test]
fn unknown_escapes_are_kept_literally_and_formatting_becomes_line_breaks() {
    let m = Message::parse(
        "MSH|^~\\&|A|B|C|D|1||ORU^R01|1|P|2.5\rOBX|1|FT|X||\\H\\Bold\\N\\ \\Zlocal\\ \\C2842\\ a\\.sp 2\\b\\.in+4\\c \\X414243\\ open\\X4\r",
    )
    .unwrap();
    assert_eq!(
        m.segment("OBX").unwrap().value(5, 1),
        "Bold \\Zlocal\\ \\C2842\\ a\n\nb\\.in+4\\c ABC open\\X4"
    );
}

#[test]
fn encoding_then_parsing_gives_the_same_message() {
    for name in ["ref-i12-emis.hl7", "ref-i12-systmone.hl7", "adt-a01.hl7"] {
        let m = Message::parse(&fixture(name)).unwrap();
        let again = Message::parse(&m.encode()).unwrap();
        assert_eq!(m, again, "{name}");
    }
}

#[test]
fn built_values_are_escaped() {
    let mut m = Message::new(Default::default());
    let mut msh = Segment::new("MSH");
    msh.set(9, Field::from_components(&["ACK"]))
        .set(10, Field::text("1"));
    let mut nte = Segment::new("NTE");
    nte.set(3, Field::text("a|b^c~d\\e&f\r\ng"));
    m.push(msh).push(nte);
    let text = m.encode();
    assert_eq!(
        text,
        "MSH|^~\\&|||||||ACK|1\rNTE|||a\\F\\b\\S\\c\\R\\d\\E\\e\\T\\f\\X0D\\\\.br\\g\r"
    );
    let back = Message::parse(&text).unwrap();
    assert_eq!(
        back.segment("NTE").unwrap().value(3, 1),
        "a|b^c~d\\e&f\r\ng"
    );
}

#[test]
fn parse_errors_say_what_and_where() {
    let cases: &[(&str, ParseError, Option<Location>)] = &[
        ("", ParseError::Empty, Some(Location::segment("MSH"))),
        (
            "\r\n  \n",
            ParseError::Empty,
            Some(Location::segment("MSH")),
        ),
        (
            "PID|1||9990000018\r",
            ParseError::NotMsh,
            Some(Location::segment("MSH")),
        ),
        (
            "FHS|^~\\&|A\rBHS|^~\\&\r",
            ParseError::NotMsh,
            Some(Location::segment("MSH")),
        ),
        (
            "MSH",
            ParseError::BadFieldSeparator,
            Some(Location::field("MSH", 1)),
        ),
        (
            "MSHA^~\\&",
            ParseError::BadFieldSeparator,
            Some(Location::field("MSH", 1)),
        ),
        (
            "MSH|^~|A",
            ParseError::BadEncodingCharacters,
            Some(Location::field("MSH", 2)),
        ),
        (
            "MSH|^^\\&|A",
            ParseError::BadEncodingCharacters,
            Some(Location::field("MSH", 2)),
        ),
        (
            "MSH|^~\\|||",
            ParseError::BadEncodingCharacters,
            Some(Location::field("MSH", 2)),
        ),
        (
            "MSH|^~\\&|A|B|C|D|1||REF^I12|1\rpid|1\r",
            ParseError::BadSegmentId { line: 2 },
            None,
        ),
        (
            "MSH|^~\\&|A|B|C|D|1||REF^I12|1\r\rPIDX|1\r",
            ParseError::BadSegmentId { line: 3 },
            None,
        ),
        (
            "MSH|^~\\&|A|B|C|D|1|||1\r",
            ParseError::MissingMessageType,
            Some(Location::field("MSH", 9)),
        ),
        (
            "MSH|^~\\&|A|B|C|D|1||REFERRAL^I12|1\r",
            ParseError::BadMessageType,
            Some(Location::field("MSH", 9)),
        ),
        (
            "MSH|^~\\&|A|B|C|D|1||REF^I12345|1\r",
            ParseError::BadMessageType,
            Some(Location::field("MSH", 9)),
        ),
    ];
    for (text, error, location) in cases {
        let got = Message::parse(text).unwrap_err();
        assert_eq!(&got, error, "{text:?}");
        assert_eq!(&got.location(), location, "{text:?}");
    }
}

#[test]
fn a_byte_order_mark_and_leading_blank_lines_are_ignored() {
    let text = format!("\u{feff}\r\n{}", fixture("ref-i12-emis.hl7"));
    assert_eq!(Message::parse(&text).unwrap().control_id(), "EMIS-000123");
}
