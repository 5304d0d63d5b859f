//! The ledger's contract, run against both stores it supports: an SQLite file and a PostgreSQL
//! database (created for the test and dropped after).

use serde_json::json;
use signpost_gateway::store::{OutboxRow, ReferralJson, ReferralRow, Store, StoreError};
use sqlx::Executor;

/// A referral row with its own keys, from source Bundle `source_bundle`.
pub(crate) fn referral(id: &str, source_bundle: &str) -> ReferralRow {
    ReferralRow {
        id: id.to_owned(),
        task_id: format!("task-{id}"),
        source_bundle_id: source_bundle.to_owned(),
        message_bundle_id: format!("msg-{id}"),
        correlation_id: "corr".to_owned(),
        practice_ods: "A81001".to_owned(),
        scheme_id: "scheme".to_owned(),
        scheme_endpoint: "scheme-ep".to_owned(),
        nhs_number: "9990000018".to_owned(),
        sr_status: "active".to_owned(),
        task_status: "requested".to_owned(),
        service_request: json!({"resourceType": "ServiceRequest", "id": id}),
        task: json!({"resourceType": "Task", "status": "requested"}),
        version: 1,
        created_ms: 1,
        updated_ms: 1,
    }
}

/// Audit records are appended and found; the database refuses to change or remove them.
async fn audit_is_append_only(store: &Store, url: &str) {
    let row = signpost_gateway::store::AuditRow {
        id: "a1".into(),
        at_ms: 1_000,
        kind: "rest".into(),
        subtype: "read".into(),
        action: "R".into(),
        agent: "gp-a".into(),
        address: None,
        entity: Some("r1".into()),
        status: 200,
        detail: "GET /fhir/ServiceRequest/{id}".into(),
    };
    store
        .append_audit(std::slice::from_ref(&row))
        .await
        .unwrap();
    let found = store
        .audit(&signpost_gateway::store::AuditFilter {
            entity: Some("r1".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(found, vec![row]);
    let other = sqlx::AnyPool::connect(url).await.unwrap();
    for sql in [
        "UPDATE audit_events SET agent = 'someone-else'",
        "DELETE FROM audit_events",
    ] {
        let refused = other.execute(sql).await;
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.to_string().contains("append-only")),
            "{sql}: {refused:?}"
        );
    }
    other.close().await;
    assert_eq!(
        store
            .audit(&signpost_gateway::store::AuditFilter {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .len(),
        1,
        "still there, unchanged"
    );
}

/// Write transactions at once: each commits or not on its own. One that fails on a unique key
/// or is dropped takes none of the others with it, and every commit answered `Ok` is there to
/// read (on SQLite they share batch transactions; see the store's writer).
async fn concurrent_writers(store: &Store) {
    let mut tasks = Vec::new();
    for i in 0..24 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("c-{i}");
            let mut tx = store.begin().await.unwrap();
            tx.record_request(&id, 200, "{}").await.unwrap();
            match i % 3 {
                0 => {
                    // b1 is r1's source Bundle.
                    assert!(matches!(
                        {
                            let r = referral(&id, "b1");
                            tx.insert_referral(&r, &ReferralJson::of(&r)).await
                        },
                        Err(StoreError::Duplicate)
                    ));
                    false
                }
                1 => false,
                _ => {
                    tx.insert_referral(
                        &referral(&id, &format!("b-{id}")),
                        &ReferralJson::of(&referral(&id, &format!("b-{id}"))),
                    )
                    .await
                    .unwrap();
                    tx.add_step(&id, "received", "in").await.unwrap();
                    tx.commit().await.unwrap();
                    true
                }
            }
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        let committed = task.await.unwrap();
        let id = format!("c-{i}");
        assert_eq!(
            store.request_answer(&id).await.unwrap().is_some(),
            committed,
            "{id}"
        );
        assert_eq!(
            store.referral(&id).await.unwrap().is_some(),
            committed,
            "{id}"
        );
    }
}

/// Steps added to one referral by transactions at once are numbered one after another, none
/// alike, in the order the transactions committed.
async fn steps_added_at_once_are_numbered_in_turn(store: &Store, url: &str) {
    let id = "numbered";
    let r = referral(id, "b-numbered");
    let mut tx = store.begin().await.unwrap();
    tx.insert_referral(&r, &ReferralJson::of(&r)).await.unwrap();
    tx.commit().await.unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut tx = store.begin().await.unwrap();
                tx.add_step(id, "step", &i.to_string()).await.unwrap();
                tx.commit().await.unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let seqs: Vec<i64> =
        sqlx::query_scalar("SELECT seq FROM timeline WHERE referral_id = $1 ORDER BY seq")
            .bind(id)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(seqs, (1..=16).collect::<Vec<i64>>());
    pool.close().await;
}

async fn contract(store: Store, url: &str) {
    // A referral, its request answer, a step and an outbox row commit together.
    let mut tx = store.begin().await.unwrap();
    tx.record_request("req-1", 200, "{}").await.unwrap();
    tx.insert_referral(
        &referral("r1", "b1"),
        &ReferralJson::of(&referral("r1", "b1")),
    )
    .await
    .unwrap();
    tx.add_step("r1", "received", "in").await.unwrap();
    tx.add_step("r1", "queued", "out").await.unwrap();
    tx.add_outbox(&OutboxRow {
        id: "m1".into(),
        exchange: "sp.referrals".into(),
        routing_key: "scheme-ep".into(),
        referral_id: "r1".into(),
        label: "referral".into(),
        envelope: "{}".into(),
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();

    // Nothing from a rolled-back transaction remains.
    let mut tx = store.begin().await.unwrap();
    tx.record_request("req-2", 200, "{}").await.unwrap();
    tx.insert_referral(
        &referral("r2", "b2"),
        &ReferralJson::of(&referral("r2", "b2")),
    )
    .await
    .unwrap();
    drop(tx);
    assert!(store.referral("r2").await.unwrap().is_none());
    assert!(store.request_answer("req-2").await.unwrap().is_none());

    // A request id or a source Bundle id seen before is a duplicate.
    let mut tx = store.begin().await.unwrap();
    assert!(matches!(
        tx.record_request("req-1", 200, "{}").await,
        Err(StoreError::Duplicate)
    ));
    drop(tx);
    let mut tx = store.begin().await.unwrap();
    assert!(matches!(
        tx.insert_referral(
            &referral("r3", "b1"),
            &ReferralJson::of(&referral("r3", "b1"))
        )
        .await,
        Err(StoreError::Duplicate)
    ));
    drop(tx);
    assert_eq!(
        store.request_answer("req-1").await.unwrap(),
        Some((200, "{}".to_owned()))
    );

    // Reads.
    let r = store.referral("r1").await.unwrap().unwrap();
    assert_eq!(r, referral("r1", "b1"));
    assert_eq!(
        store.referral_by_task("task-r1").await.unwrap().unwrap().id,
        "r1"
    );
    assert_eq!(
        store
            .referral_by_message_bundle("msg-r1")
            .await
            .unwrap()
            .unwrap()
            .id,
        "r1"
    );
    assert_eq!(
        store
            .referrals_for_nhs_number("9990000018")
            .await
            .unwrap()
            .len(),
        1
    );
    let steps: Vec<String> = store
        .timeline("r1")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.step)
        .collect();
    assert_eq!(steps, ["received", "queued"]);

    // Several steps at once follow the last, in their order.
    let mut tx = store.begin().await.unwrap();
    tx.add_steps("r1", &[("validated", "a"), ("routed", "b"), ("sent", "c")])
        .await
        .unwrap();
    tx.add_step("r1", "delivered", "d").await.unwrap();
    tx.commit().await.unwrap();
    let steps: Vec<String> = store
        .timeline("r1")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.step)
        .collect();
    assert_eq!(
        steps,
        [
            "received",
            "queued",
            "validated",
            "routed",
            "sent",
            "delivered"
        ]
    );

    // Optimistic update: the second writer at the same version loses.
    let mut changed = r.clone();
    changed.version = 2;
    changed.task_status = "accepted".into();
    let mut tx = store.begin().await.unwrap();
    assert!(tx
        .update_referral(&changed, &ReferralJson::of(&changed), 1)
        .await
        .unwrap());
    assert!(!tx
        .update_referral(&changed, &ReferralJson::of(&changed), 1)
        .await
        .unwrap());
    tx.commit().await.unwrap();
    assert_eq!(
        store.referral("r1").await.unwrap().unwrap().task_status,
        "accepted"
    );

    // Outbox: unsent until marked; marking twice is a no-op.
    assert_eq!(store.unsent(10).await.unwrap().len(), 1);
    // The label is read inside the transaction, which goes on after the read (a missing row
    // is `None`, not a failure).
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.outbox_label("m1").await.unwrap().as_deref(),
        Some("referral")
    );
    assert_eq!(tx.outbox_label("no-such-message").await.unwrap(), None);
    assert!(tx.mark_sent("m1", None).await.unwrap());
    assert!(!tx.mark_sent("m1", Some("late")).await.unwrap());
    tx.commit().await.unwrap();
    assert_eq!(store.unsent_count().await.unwrap(), 0);

    // A published row's envelope is emptied; one set aside keeps it.
    let mut tx = store.begin().await.unwrap();
    tx.add_outbox(&OutboxRow {
        id: "m2".into(),
        exchange: "x".into(),
        routing_key: "k".into(),
        referral_id: "r1".into(),
        label: "letter".into(),
        envelope: "{\"kept\":true}".into(),
    })
    .await
    .unwrap();
    assert!(tx.mark_sent("m2", Some("no route")).await.unwrap());
    tx.commit().await.unwrap();
    let other = sqlx::AnyPool::connect(url).await.unwrap();
    let envelopes: Vec<(String, String)> =
        sqlx::query_as("SELECT id, envelope FROM outbox ORDER BY id")
            .fetch_all(&other)
            .await
            .unwrap();
    other.close().await;
    assert_eq!(
        envelopes,
        vec![
            ("m1".to_owned(), String::new()),
            ("m2".to_owned(), "{\"kept\":true}".to_owned())
        ]
    );

    // Inbox: a bus message id is processed once.
    let mut tx = store.begin().await.unwrap();
    assert!(tx.record_inbox("e1").await.unwrap());
    assert!(!tx.record_inbox("e1").await.unwrap());
    tx.commit().await.unwrap();
    assert!(store.ping().await);

    concurrent_writers(&store).await;
    steps_added_at_once_are_numbered_in_turn(&store, url).await;
}

#[tokio::test]
async fn the_ledger_keeps_its_contract_on_sqlite() {
    let dir =
        std::env::temp_dir().join(format!("signpost-ledger-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}/ledger.db", dir.display());
    let store = Store::connect(&url).await.unwrap();
    audit_is_append_only(&store, &url).await;
    contract(store, &url).await;
    // Reopening finds the schema and the data.
    let again = Store::connect(&format!("sqlite://{}/ledger.db", dir.display()))
        .await
        .unwrap();
    assert!(again.referral("r1").await.unwrap().is_some());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_ledger_keeps_its_contract_on_postgresql() {
    let db = crate::Postgres::create().await;
    let store = Store::connect(&db.url).await.unwrap();
    audit_is_append_only(&store, &db.url).await;
    contract(store.clone(), &db.url).await;
    drop(store);
    db.drop().await;
}
