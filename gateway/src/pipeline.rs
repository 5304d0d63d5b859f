//! The gateway's pipeline for `$process-message`: new referrals, cancellations, and scheme
//! responses (status changes and the outcome letter).
//!
//! Each flow reads the parsed message, decides, and writes everything it decided (the request's
//! answer, the referral, its timeline, the outbox rows) in one transaction. The answer is
//! returned only after that commit; the outbox relay publishes afterwards. A request id seen
//! before, or a referral Bundle id already accepted, is a 409 `duplicate` and changes nothing.

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use serde_json::{json, Value};
use signpost_bus::envelope::{now_rfc3339, Envelope, Kind};
use signpost_bus::topology::{RECORDS_EXCHANGE, REFERRALS_EXCHANGE};
use signpost_bus::uris::{self, REFERRAL_ID_SYSTEM};
use signpost_bus::Directory;
use tokio::sync::Notify;

use crate::auth::{self, Caller};
use crate::error::ApiError;
use crate::fhir::{self, has_coding, identifier_value, str_at, type_of};
use crate::message::{self, Event, Message};
use crate::metrics::Metrics;
use crate::record_event;
use crate::referral::{self, NewIds, ReferralInput};
use crate::store::{now_ms, OutboxRow, ReferralJson, ReferralRow, Store, StoreError, WriteTx};

/// Who is asking, from the BaRS headers.
#[derive(Debug, Clone)]
pub struct RequestIds {
    pub request_id: String,
    pub correlation_id: String,
    pub traceparent: Option<String>,
}

/// The gateway's shared state.
pub struct Gateway {
    pub store: Store,
    pub directory: Arc<Directory>,
    pub source_endpoint: String,
    /// Wakes the outbox relay after a commit.
    pub outbox_ready: Arc<Notify>,
    pub metrics: Arc<Metrics>,
    /// Compiled profiles, shared.
    pub profiles: Arc<signpost_profiles::Profiles>,
    /// What each coded entry in a GP record does (`profiles/record-events.json`).
    pub record_events: record_event::Mapping,
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if matches!(e, StoreError::PastDeadline) {
            ApiError::timeout()
        } else if e.is_unavailable() {
            tracing::warn!(error = %e, "ledger unavailable");
            ApiError::unavailable("The ledger cannot accept writes right now; nothing was accepted. Retry later with the same X-Request-Id")
        } else {
            ApiError::internal(&e)
        }
    }
}

/// What a `$process-message` request does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    NewReferral,
    Cancellation,
    SchemeResponse,
    RecordEvent,
}

fn duplicate_request() -> ApiError {
    ApiError::duplicate("A message with this X-Request-Id was already processed").at("X-Request-Id")
}

/// What a request is answered with: the status and the JSON text of the body.
pub type Reply = (StatusCode, Bytes);

fn reply((status, body): (StatusCode, Value)) -> Reply {
    (status, Bytes::from(fhir::json_text(&body)))
}

impl Gateway {
    /// Handle a `$process-message` body. `Ok` is the status and the body to answer with.
    ///
    /// A request id seen before is refused (409) whatever the body now says. A new referral
    /// finds that out in its own transaction, where recording the request id fails, so the
    /// ledger is read only when the request fails; every other kind of message is checked
    /// first, as it may do work (render a letter, count it) before its transaction.
    pub async fn process_message(
        &self,
        caller: &Caller,
        ids: &RequestIds,
        body: &[u8],
    ) -> Result<Reply, ApiError> {
        match self.process(caller, ids, body).await {
            Ok(answer) => {
                self.outbox_ready.notify_one();
                Ok(answer)
            }
            // A retry of a request that succeeded may fail now (a cancelled referral cannot be
            // cancelled again): it is still a duplicate.
            Err(e) => match self.store.request_answer(&ids.request_id).await {
                Ok(Some(_)) => Err(duplicate_request()),
                _ => Err(e),
            },
        }
    }

    async fn process(
        &self,
        caller: &Caller,
        ids: &RequestIds,
        body: &[u8],
    ) -> Result<Reply, ApiError> {
        let msg = message::parse(body)?;
        let action = match msg.event {
            Event::Request => {
                let sr = msg.focus().1;
                if type_of(sr) != Some("ServiceRequest") {
                    return Err(ApiError::invariant(
                        "MessageHeader.focus of a servicerequest-request must be a ServiceRequest",
                    )
                    .at("MessageHeader.focus"));
                }
                match str_at(sr, "/status") {
                    Some("revoked" | "entered-in-error") => Action::Cancellation,
                    _ if msg.reason.as_deref().unwrap_or("new") == "new" => Action::NewReferral,
                    _ => return Err(ApiError::not_supported("Only new referrals and cancellations (ServiceRequest.status revoked or entered-in-error) are supported for servicerequest-request").at("MessageHeader.reason")),
                }
            }
            Event::Response => Action::SchemeResponse,
            Event::RecordEvent => Action::RecordEvent,
        };
        if action != Action::NewReferral
            && self.store.request_answer(&ids.request_id).await?.is_some()
        {
            return Err(duplicate_request());
        }
        self.check_profile(&msg)?;
        match action {
            Action::NewReferral => self.new_referral(caller, ids, msg).await,
            Action::Cancellation => self.cancel(caller, ids, &msg).await.map(reply),
            Action::SchemeResponse => self.scheme_response(caller, ids, &msg).await.map(reply),
            Action::RecordEvent => self.record_event(caller, ids, &msg).await,
        }
    }

    /// The checks of the profile for this kind of message: `sp-referral-message` for a new
    /// referral, `sp-scheme-response` for a scheme's update, base R4 for a cancellation.
    fn check_profile(&self, msg: &Message) -> Result<(), ApiError> {
        let cancelling = matches!(
            str_at(msg.focus().1, "/status"),
            Some("revoked" | "entered-in-error")
        );
        let profile = match msg.event {
            Event::Request if cancelling => None,
            Event::Request => Some("sp-referral-message"),
            Event::Response => Some("sp-scheme-response"),
            Event::RecordEvent => None,
        };
        let outcome = match profile {
            Some(p) => self
                .profiles
                .validate(&msg.bundle, Some(p))
                .map_err(|e| ApiError::internal(&e))?,
            None => signpost_profiles::Outcome::of(self.profiles.check_base(&msg.bundle)),
        };
        match ApiError::from_outcome(outcome) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn new_referral(
        &self,
        caller: &Caller,
        ids: &RequestIds,
        msg: Message,
    ) -> Result<Reply, ApiError> {
        let ReferralParts {
            service_request: (sr_url, sr),
            patient,
            nhs_number,
            practice: (practice_url, practice),
            ods,
        } = referral_parts(&msg)?;
        auth::send_as(caller, ods)?;
        let scheme = self.directory.scheme_for_practice(ods).ok_or_else(|| {
            ApiError::business_rule(format!(
                "No social prescribing scheme in the directory takes referrals from practice {ods}"
            ))
            .at("MessageHeader.sender")
        })?;
        let endpoint = self.directory.endpoint(&scheme.endpoint).ok_or_else(|| {
            ApiError::business_rule(format!(
                "The scheme for practice {ods} has no active endpoint"
            ))
        })?;

        let new_ids = NewIds::fresh();
        let now = now_rfc3339();
        let built = referral::build_referral(
            &ReferralInput {
                message: &msg.bundle,
                service_request: (sr_url, sr),
                patient,
                practice: (practice_url, practice),
                nhs_number,
                scheme,
                scheme_endpoint: endpoint,
                source_endpoint: &self.source_endpoint,
                now: &now,
            },
            &new_ids,
        );
        let ms = now_ms();
        let row = ReferralRow {
            id: new_ids.referral.clone(),
            task_id: new_ids.task.clone(),
            source_bundle_id: msg.id.clone(),
            message_bundle_id: new_ids.message_bundle.clone(),
            correlation_id: ids.correlation_id.clone(),
            practice_ods: ods.to_owned(),
            scheme_id: scheme.id.clone(),
            scheme_endpoint: endpoint.id.clone(),
            nhs_number: nhs_number.to_owned(),
            sr_status: "active".to_owned(),
            task_status: "requested".to_owned(),
            service_request: built.service_request,
            task: built.task,
            version: 1,
            created_ms: ms,
            updated_ms: ms,
        };
        // Everything the transaction writes is made before it takes the writer. The message is
        // written out once, for the scheme's envelope and for the answer.
        let answered = built.message.reference();
        let answer =
            serde_json::value::to_raw_value(&built.message).map_err(|e| ApiError::internal(&e))?;
        drop(built.message);
        let row_json = ReferralJson::of(&row);
        let patient_text = fhir::json_text(patient);
        let outbox = outbox_row(
            &Envelope::with_payload(
                Kind::ReferralMessage,
                ids.correlation_id.clone(),
                new_ids.referral.clone(),
                endpoint.id.clone(),
                ids.traceparent.clone(),
                answer.clone(),
            ),
            REFERRALS_EXCHANGE,
            "referral",
        );
        let received = format!("Referral message received from practice {ods}");
        let routed = format!("Routed to scheme {} ({})", scheme.name, scheme.id);
        let queued = format!("Queued for delivery to endpoint {}", endpoint.id);
        // While it waits for the writer and the commit, a request holds only what it writes
        // and its answer: with 64 requests in flight, dropping the parsed message here took
        // the gateway's peak memory from about 100 MB to about 88 MB.
        drop(msg);
        let mut tx = self.store.begin().await?;
        record_request(&mut tx, ids, 200, &answered).await?;
        match tx.insert_referral(&row, &row_json).await {
            Err(StoreError::Duplicate) => {
                return Err(ApiError::duplicate(
                    "A referral with this Bundle.id was already accepted",
                )
                .at("Bundle.id"))
            }
            other => other?,
        }
        tx.add_steps(
            &row.id,
            &[
                ("received", &received),
                ("validated", "Message checks passed"),
                ("routed", &routed),
                ("queued", &queued),
            ],
        )
        .await?;
        // Kept for the outcome letter: a GP reads whose letter it is, and MESH routes on it.
        tx.add_document(
            &format!("{}-patient", row.id),
            &row.id,
            PATIENT_DOCUMENT,
            &patient_text,
        )
        .await?;
        tx.add_outbox(&outbox).await?;
        tx.commit().await?;
        crate::audit::note_entity(&row.id);
        self.metrics.referrals_accepted.inc();
        tracing::info!(referral = %row.id, scheme = %scheme.id, "referral accepted");
        Ok((
            StatusCode::OK,
            Bytes::from(Box::<str>::from(answer).into_string()),
        ))
    }

    async fn find_for_cancellation(&self, msg: &Message) -> Result<ReferralRow, ApiError> {
        let sr = msg.focus().1;
        let by_id = match str_at(sr, "/id") {
            Some(id) => self.store.referral(id).await?,
            None => None,
        };
        let found = match by_id {
            Some(r) => Some(r),
            None => match identifier_value(sr, REFERRAL_ID_SYSTEM) {
                Some(id) => self.store.referral(id).await?,
                None => self.store.referral_by_source_bundle(&msg.id).await?,
            },
        };
        found.ok_or_else(|| ApiError::not_found("No referral matches this cancellation (ServiceRequest.id, its Signpost identifier, or Bundle.id)").at("ServiceRequest.id"))
    }

    async fn cancel(
        &self,
        caller: &Caller,
        ids: &RequestIds,
        msg: &Message,
    ) -> Result<(StatusCode, Value), ApiError> {
        let sr = msg.focus().1;
        let status = str_at(sr, "/status").unwrap_or("revoked").to_owned();
        let before = self.find_for_cancellation(msg).await?;
        crate::audit::note_entity(&before.id);
        auth::cancel(caller, &before)?;
        if referral::is_terminal(&before.task_status) {
            return Err(ApiError::business_rule(format!(
                "The referral is already closed ({}); it cannot be cancelled",
                before.task_status
            )));
        }
        let reason_text = str_at(sr, "/reasonCode/0/text").unwrap_or("Cancelled by the referrer");
        let bars_reason = msg.reason.clone().unwrap_or_else(|| "update".to_owned());
        let c = self.cancellation(
            ids,
            &before,
            &status,
            reason_text,
            sr.get("reasonCode"),
            &bars_reason,
        );
        let answered = answer_ref(&c.message);
        let mut tx = self.store.begin().await?;
        record_request(&mut tx, ids, 200, &answered).await?;
        self.write_cancellation(
            &mut tx,
            &before,
            &c,
            &format!("Cancelled by the referrer ({status})"),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(referral = %before.id, "referral cancelled");
        Ok((StatusCode::OK, c.message))
    }

    /// A coded entry added to a GP record: what `profiles/record-events.json` says its code does.
    async fn record_event(
        &self,
        caller: &Caller,
        ids: &RequestIds,
        msg: &Message,
    ) -> Result<Reply, ApiError> {
        let entry = msg.focus().1;
        if !matches!(
            type_of(entry),
            Some("Procedure" | "Observation" | "ServiceRequest")
        ) {
            return Err(ApiError::invariant("The focus of a record event must be the recorded entry: a Procedure, Observation or ServiceRequest").at("MessageHeader.focus"));
        }
        let rule = self.record_events.rule_for(entry).ok_or_else(|| {
            ApiError::not_supported("The entry's code has no record-event action in Signpost (see profiles/record-events.json)").at("code.coding")
        })?;
        match rule.action {
            record_event::Action::Refer => {
                let referral = record_event::referral_message(msg);
                self.new_referral(caller, ids, referral).await
            }
            record_event::Action::Decline => {
                self.declined(caller, ids, msg, &rule.code).await.map(reply)
            }
        }
    }

    /// Social prescribing declined: recorded, and the patient's open referrals from the practice
    /// cancelled, in one transaction.
    async fn declined(
        &self,
        caller: &Caller,
        ids: &RequestIds,
        msg: &Message,
        code: &str,
    ) -> Result<(StatusCode, Value), ApiError> {
        let entries = msg.entries();
        let entry = msg.focus().1;
        let patient = record_event::subject(entry)
            .and_then(|s| entries.resolve(s))
            .map(|(_, p)| p)
            .filter(|p| type_of(p) == Some("Patient"))
            .ok_or_else(|| {
                ApiError::invariant("The entry's subject must be a Patient in the Bundle")
                    .at("subject")
            })?;
        let nhs = identifier_value(patient, uris::NHS_NUMBER)
            .filter(|n| fhir::nhs_number_is_valid(n))
            .ok_or_else(|| {
                ApiError::value("The Patient needs a valid NHS number").at("Patient.identifier")
            })?;
        let ods = msg
            .header()
            .get("sender")
            .and_then(|s| entries.resolve(s))
            .and_then(|(_, o)| identifier_value(o, uris::ODS_ORGANIZATION))
            .ok_or_else(|| {
                ApiError::required("MessageHeader.sender must be the practice, with its ODS code")
                    .at("MessageHeader.sender")
            })?;
        auth::send_as(caller, ods)?;
        let open: Vec<ReferralRow> = self
            .store
            .referrals_for_nhs_number(nhs)
            .await?
            .into_iter()
            .filter(|r| r.practice_ods == ods && !referral::is_terminal(&r.task_status))
            .collect();
        let text = format!("Recorded: social prescribing declined; {} open referral(s) from practice {ods} cancelled", open.len());
        let answer = json!({"resourceType": "OperationOutcome", "issue": [{"severity": "information", "code": "informational", "diagnostics": text}]});
        let answered = answer_ref(&answer);
        let mut tx = self.store.begin().await?;
        record_request(&mut tx, ids, 200, &answered).await?;
        match tx
            .insert_record_event(&msg.id, nhs, ods, code, "decline")
            .await
        {
            Err(StoreError::Duplicate) => {
                return Err(
                    ApiError::duplicate("This record event was already processed").at("Bundle.id"),
                )
            }
            other => other?,
        }
        for before in &open {
            let c = self.cancellation(
                ids,
                before,
                "revoked",
                "Social prescribing declined (recorded in the GP record)",
                None,
                "update",
            );
            self.write_cancellation(
                &mut tx,
                before,
                &c,
                &format!("Declined in the GP record (SNOMED CT {code})"),
            )
            .await?;
        }
        tx.commit().await?;
        tracing::info!(
            cancelled = open.len(),
            "record event: social prescribing declined"
        );
        Ok((StatusCode::OK, answer))
    }

    /// A referral's cancelled state and the cancellation message for its scheme.
    fn cancellation(
        &self,
        ids: &RequestIds,
        before: &ReferralRow,
        status: &str,
        reason_text: &str,
        reason_code: Option<&Value>,
        bars_reason: &str,
    ) -> Cancellation {
        let now = now_rfc3339();
        let mut after = before.clone();
        after.version += 1;
        after.updated_ms = now_ms();
        after.sr_status = status.to_owned();
        after.task_status = "cancelled".to_owned();
        after.service_request["status"] = json!(status);
        after.service_request["meta"] =
            json!({"versionId": after.version.to_string(), "lastUpdated": now});
        if let Some(reason) = reason_code {
            after.service_request["reasonCode"] = reason.clone();
        }
        after.task["status"] = json!("cancelled");
        after.task["statusReason"] = json!({"text": reason_text});
        after.task["lastModified"] = json!(now);
        after.task["meta"] = json!({"versionId": after.version.to_string(), "lastUpdated": now});
        let message = referral::build_cancellation(
            &before.message_bundle_id,
            bars_reason,
            &after.service_request,
            &after.task,
            &self.source_endpoint,
            &now,
        );
        let envelope = Envelope::new(
            Kind::ReferralMessage,
            before.correlation_id.clone(),
            before.id.clone(),
            before.scheme_endpoint.clone(),
            ids.traceparent.clone(),
            message.clone(),
        );
        Cancellation {
            after_json: ReferralJson::of(&after),
            outbox: outbox_row(&envelope, REFERRALS_EXCHANGE, "cancellation"),
            after,
            message,
        }
    }

    async fn write_cancellation(
        &self,
        tx: &mut WriteTx,
        before: &ReferralRow,
        c: &Cancellation,
        why: &str,
    ) -> Result<(), ApiError> {
        if !tx
            .update_referral(&c.after, &c.after_json, before.version)
            .await?
        {
            return Err(ApiError::unavailable(
                "The referral changed while this request was processed; retry",
            ));
        }
        tx.add_step(&before.id, "cancelled", why).await?;
        tx.add_outbox(&c.outbox).await?;
        let queued = format!(
            "Cancellation queued for endpoint {}",
            before.scheme_endpoint
        );
        tx.add_step(&before.id, "cancellation-queued", &queued)
            .await?;
        Ok(())
    }

    async fn scheme_response(
        &self,
        caller: &Caller,
        ids: &RequestIds,
        msg: &Message,
    ) -> Result<(StatusCode, Value), ApiError> {
        let header = msg.header();
        let about = str_at(header, "/response/identifier").ok_or_else(|| {
            ApiError::required("MessageHeader.response.identifier (the Bundle.id of the referral message) is required").at("MessageHeader.response.identifier")
        })?;
        match str_at(header, "/response/code") {
            Some("ok") => {}
            _ => {
                return Err(ApiError::not_supported(
                    "Only MessageHeader.response.code 'ok' is supported",
                )
                .at("MessageHeader.response.code"))
            }
        }
        let before = self
            .store
            .referral_by_message_bundle(about)
            .await?
            .ok_or_else(|| {
                ApiError::not_found("No referral matches MessageHeader.response.identifier")
                    .at("MessageHeader.response.identifier")
            })?;
        crate::audit::note_entity(&before.id);
        auth::respond(caller, &before)?;
        let entries = msg.entries();
        let task_in = entries.of_type("Task").map(|(_, t)| t);
        let letter = entries
            .iter()
            .find(|(_, r)| matches!(type_of(r), Some("Composition" | "DocumentReference")))
            .map(|(_, r)| r);
        // A letter about someone else must never reach this patient's notes.
        if let Some(subject) = letter.and_then(|l| l.get("subject")) {
            let nhs = match entries.resolve(subject) {
                Some((_, patient)) => identifier_value(patient, uris::NHS_NUMBER),
                None => str_at(subject, "/identifier/system")
                    .filter(|s| uris::is_system(s, uris::NHS_NUMBER))
                    .and_then(|_| str_at(subject, "/identifier/value")),
            };
            if nhs.is_some_and(|n| n != before.nhs_number) {
                return Err(ApiError::business_rule(
                    "The letter's subject is not the referral's patient: the NHS numbers differ",
                )
                .at("Composition.subject"));
            }
        }

        let now = now_rfc3339();
        let mut after = before.clone();
        let mut steps: Vec<(String, String)> = Vec::new();
        if let Some(task) = task_in {
            let to = str_at(task, "/status")
                .ok_or_else(|| ApiError::required("Task.status is required").at("Task.status"))?;
            if to != before.task_status {
                auth::performer_status(to).map_err(|e| e.at("Task.status"))?;
            }
            if !referral::TASK_STATUSES.contains(&to) {
                return Err(ApiError::value(format!(
                    "Task.status '{to}' is not part of the referral lifecycle"
                ))
                .at("Task.status"));
            }
            if to != before.task_status {
                if !referral::performer_may(&before.task_status, to) {
                    return Err(ApiError::business_rule(format!(
                        "A scheme cannot move a referral from '{}' to '{to}'",
                        before.task_status
                    ))
                    .at("Task.status"));
                }
                after.task_status = to.to_owned();
                after.sr_status = referral::service_request_status(to, &before.sr_status);
                after.task["status"] = json!(to);
                after.task["lastModified"] = json!(now);
                match task.get("statusReason") {
                    Some(reason) => after.task["statusReason"] = reason.clone(),
                    None => {
                        if let Some(o) = after.task.as_object_mut() {
                            o.remove("statusReason");
                        }
                    }
                }
                if let Some(output) = task.get("output") {
                    after.task["output"] = output.clone();
                }
                if let Some(bs) = task.get("businessStatus") {
                    after.task["businessStatus"] = bs.clone();
                }
                after.service_request["status"] = json!(after.sr_status);
                let detail = if task.get("statusReason").is_some() {
                    format!("Scheme set the status to {to}, with a reason")
                } else {
                    format!("Scheme set the status to {to}")
                };
                steps.push((to.to_owned(), detail));
            }
        }
        if steps.is_empty() && letter.is_none() {
            return Err(ApiError::business_rule(format!(
                "The response changes nothing: the referral is already '{}' and no letter is attached",
                before.task_status
            )));
        }
        if !steps.is_empty() {
            after.version += 1;
            after.updated_ms = now_ms();
            let meta = json!({"versionId": after.version.to_string(), "lastUpdated": now});
            after.task["meta"] = meta.clone();
            after.service_request["meta"] = meta;
        }

        let mut outbox = Vec::new();
        let mut letter_doc = None;
        if let Some(letter) = letter {
            let doc_id = uuid::Uuid::now_v7().to_string();
            let scheme = self.directory.scheme(&before.scheme_id);
            let scheme_org = scheme
                .map(|s| s.organization.clone())
                .unwrap_or_else(|| json!({"resourceType": "Organization"}));
            let patient = self
                .store
                .latest_document(&before.id, PATIENT_DOCUMENT)
                .await?
                .map(|(_, p)| p);
            let replaces = self
                .store
                .latest_document(&before.id, LETTER_DOCUMENT)
                .await?
                .map(|(id, _)| id);
            let rendered = (type_of(letter) == Some("Composition")).then(|| {
                let ctx = self.letter_context(&after, patient.as_ref(), &now);
                let l = signpost_letter::Letter::new(letter, &ctx);
                referral::Rendered {
                    title: l.title().to_owned(),
                    pdf: l.to_pdf(),
                    html: l.to_html(),
                    text: l.to_text(),
                }
            });
            let doc = referral::letter_document(
                letter,
                referral::LetterFor {
                    doc_id: &doc_id,
                    referral_id: &before.id,
                    nhs_number: &before.nhs_number,
                    patient: patient.as_ref(),
                    scheme_organization: &scheme_org,
                    rendered,
                    replaces: replaces.as_deref(),
                    now: &now,
                },
            );
            steps.push((
                "letter-received".to_owned(),
                "Outcome letter received from the scheme".to_owned(),
            ));
            let gp_target = self
                .directory
                .practice(&before.practice_ods)
                .and_then(|p| p.gp_endpoint.clone());
            match gp_target {
                Some(target) => {
                    let envelope = Envelope::new(
                        Kind::LetterFiling,
                        before.correlation_id.clone(),
                        before.id.clone(),
                        target.clone(),
                        ids.traceparent.clone(),
                        doc.clone(),
                    );
                    outbox.push(outbox_row(&envelope, RECORDS_EXCHANGE, "letter"));
                    steps.push((
                        "letter-queued".to_owned(),
                        format!("Letter queued for the GP system ({target})"),
                    ));
                }
                None => {
                    self.metrics.letters_unroutable.inc();
                    tracing::error!(referral = %before.id, practice = %before.practice_ods, "no GP system route for a letter");
                    steps.push((
                        "letter-unroutable".to_owned(),
                        format!(
                            "No GP system route for practice {}: the letter is held in the ledger",
                            before.practice_ods
                        ),
                    ));
                }
            }
            letter_doc = Some((doc_id, letter.clone(), doc));
        }

        let answer = msg.bundle.clone();
        let answered = answer_ref(&answer);
        let after_json = ReferralJson::of(&after);
        let letter_texts = letter_doc
            .as_ref()
            .map(|(doc_id, original, doc)| (doc_id, original.to_string(), doc.to_string()));
        let mut tx = self.store.begin().await?;
        record_request(&mut tx, ids, 200, &answered).await?;
        if after.version != before.version
            && !tx
                .update_referral(&after, &after_json, before.version)
                .await?
        {
            return Err(ApiError::unavailable(
                "The referral changed while this request was processed; retry",
            ));
        }
        if let Some((doc_id, original, doc)) = &letter_texts {
            tx.add_document(
                &format!("{doc_id}-original"),
                &before.id,
                "letter-received",
                original,
            )
            .await?;
            tx.add_document(doc_id, &before.id, LETTER_DOCUMENT, doc)
                .await?;
        }
        let steps: Vec<(&str, &str)> = steps
            .iter()
            .map(|(s, d)| (s.as_str(), d.as_str()))
            .collect();
        tx.add_steps(&before.id, &steps).await?;
        for row in &outbox {
            tx.add_outbox(row).await?;
        }
        tx.commit().await?;
        self.metrics.scheme_responses.inc();
        tracing::info!(referral = %before.id, status = %after.task_status, letter = letter_doc.is_some(), "scheme response recorded");
        Ok((StatusCode::OK, answer))
    }
}

/// Ledger document kinds: the patient as referred, and the letter as sent to the GP system.
const PATIENT_DOCUMENT: &str = "patient";
const LETTER_DOCUMENT: &str = "letter-for-gp";

impl Gateway {
    /// What the letter's header says, from the ledger and the directory (not from the scheme).
    fn letter_context(
        &self,
        referral: &ReferralRow,
        patient: Option<&Value>,
        now: &str,
    ) -> signpost_letter::LetterContext {
        let name = patient
            .and_then(|p| p.get("name"))
            .and_then(Value::as_array)
            .and_then(|names| {
                names
                    .iter()
                    .find(|n| str_at(n, "/use") == Some("official"))
                    .or_else(|| names.first())
            });
        let given = name
            .and_then(|n| n.get("given"))
            .and_then(Value::as_array)
            .map(|g| {
                g.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        let practice = self.directory.practice(&referral.practice_ods);
        let created = time::OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(referral.created_ms) * 1_000_000,
        )
        .map(signpost_bus::envelope::format_rfc3339)
        .unwrap_or_default();
        signpost_letter::LetterContext {
            given_name: given,
            family_name: name
                .and_then(|n| str_at(n, "/family"))
                .unwrap_or_default()
                .to_owned(),
            nhs_number: referral.nhs_number.clone(),
            birth_date: patient
                .and_then(|p| str_at(p, "/birthDate"))
                .unwrap_or_default()
                .to_owned(),
            practice_name: practice.map(|p| p.name.clone()).unwrap_or_default(),
            practice_ods: referral.practice_ods.clone(),
            scheme_name: self
                .directory
                .scheme(&referral.scheme_id)
                .map(|s| s.name.clone())
                .unwrap_or_default(),
            referral_date: created,
            outcome_date: now.to_owned(),
            status: referral.task_status.clone(),
            status_reason: str_at(&referral.task, "/statusReason/text").map(str::to_owned),
            referral_id: referral.id.clone(),
        }
    }
}

/// What a request was answered with, as the ledger keeps it: `Bundle/<id>`, or the resource type
/// of an answer without an id. The answer itself (a message made from the referral the ledger
/// keeps, or a short OperationOutcome) is not kept: a repeated request id is refused (409), not
/// answered again.
fn answer_ref(answer: &Value) -> String {
    let ty = str_at(answer, "/resourceType").unwrap_or("unknown");
    match str_at(answer, "/id") {
        Some(id) => format!("{ty}/{id}"),
        None => ty.to_owned(),
    }
}

/// Record the request's answer (`answer`, see [`answer_ref`]).
async fn record_request(
    tx: &mut WriteTx,
    ids: &RequestIds,
    status: u16,
    answer: &str,
) -> Result<(), ApiError> {
    match tx.record_request(&ids.request_id, status, answer).await {
        Err(StoreError::Duplicate) => Err(duplicate_request()),
        other => Ok(other?),
    }
}

/// A cancellation, built: the referral's new state, and the message and envelope for its scheme.
struct Cancellation {
    after: ReferralRow,
    after_json: ReferralJson,
    message: Value,
    outbox: OutboxRow,
}

/// The parts of a new referral message the gateway reads, each checked.
pub struct ReferralParts<'a> {
    pub service_request: (Option<&'a str>, &'a Value),
    pub patient: &'a Value,
    pub nhs_number: &'a str,
    pub practice: (Option<&'a str>, &'a Value),
    pub ods: &'a str,
}

/// Check a new referral message: the ServiceRequest is for social prescribing, its subject is
/// a Patient in the Bundle with a valid NHS number, and the sender is an Organization with an
/// ODS code.
pub fn referral_parts(msg: &Message) -> Result<ReferralParts<'_>, ApiError> {
    let entries = msg.entries();
    let (sr_url, sr) = msg.focus();
    if type_of(sr) != Some("ServiceRequest") {
        return Err(ApiError::invariant(
            "MessageHeader.focus of a servicerequest-request must be a ServiceRequest",
        )
        .at("MessageHeader.focus"));
    }
    if !has_coding(sr.get("code"), fhir::SNOMED, fhir::SP_REFERRAL_CODE) {
        return Err(ApiError::not_supported(format!(
            "ServiceRequest.code must be SNOMED CT {} (Referral to social prescribing service)",
            fhir::SP_REFERRAL_CODE
        ))
        .at("ServiceRequest.code"));
    }
    let subject = sr.get("subject").ok_or_else(|| {
        ApiError::required("ServiceRequest.subject is required").at("ServiceRequest.subject")
    })?;
    let (_, patient) = entries
        .resolve(subject)
        .filter(|(_, r)| type_of(r) == Some("Patient"))
        .ok_or_else(|| {
            ApiError::invariant("ServiceRequest.subject must reference a Patient in the Bundle")
                .at("ServiceRequest.subject")
        })?;
    let nhs_number = identifier_value(patient, uris::NHS_NUMBER).ok_or_else(|| {
        ApiError::required("The Patient needs an NHS number (https://fhir.nhs.uk/Id/nhs-number)")
            .at("Patient.identifier")
    })?;
    if !fhir::nhs_number_is_valid(nhs_number) {
        return Err(ApiError::value(
            "The Patient's NHS number is not 10 digits with a valid Modulus 11 check digit",
        )
        .at("Patient.identifier.value"));
    }
    let sender = msg.header().get("sender").ok_or_else(|| {
        ApiError::required("MessageHeader.sender is required").at("MessageHeader.sender")
    })?;
    let practice = entries
        .resolve(sender)
        .filter(|(_, r)| type_of(r) == Some("Organization"))
        .ok_or_else(|| {
            ApiError::invariant("MessageHeader.sender must reference an Organization in the Bundle")
                .at("MessageHeader.sender")
        })?;
    let ods = identifier_value(practice.1, uris::ODS_ORGANIZATION)
        .ok_or_else(|| ApiError::required("The sending Organization needs an ODS code (https://fhir.nhs.uk/Id/ods-organization-code)").at("Organization.identifier"))?;
    Ok(ReferralParts {
        service_request: (sr_url, sr),
        patient,
        nhs_number,
        practice,
        ods,
    })
}

fn outbox_row(envelope: &Envelope, exchange: &str, label: &str) -> OutboxRow {
    OutboxRow {
        id: envelope.message_id.to_string(),
        exchange: exchange.to_owned(),
        routing_key: envelope.target.clone(),
        referral_id: envelope.referral_id.clone(),
        label: label.to_owned(),
        envelope: String::from_utf8(envelope.to_bytes()).unwrap_or_default(),
    }
}
