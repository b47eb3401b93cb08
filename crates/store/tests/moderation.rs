//! One test suite, run against both moderation stores (see `common` for the harness). The
//! transitions here are plain closures: the state machine itself lives in
//! `skywarden-moderation` and is tested there.

use skywarden_store::Store;
use skywarden_store::moderation::{
    AuditEntry, BatchEmit, Emitted, EventPage, EventQuery, EventSelection, Member, ModStore,
    NewModEvent, PgModStore, RecordSnapshot, SqliteModStore, StatusQuery, StatusSort, SubjectKind,
    SubjectRef, SubjectStatus, ToolSelection, Transition, TransitionFn, review,
};
use std::collections::HashSet;
use std::sync::Arc;

mod common;

async fn with_postgres<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn ModStore>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let schema = common::unique("moderation_test");
    let url = common::postgres_url();
    let store = PgModStore::connect(&url, Some(&schema))
        .await
        .unwrap_or_else(|e| panic!("the Postgres moderation tests need a server at {url}: {e}"));
    test(Arc::new(store.clone())).await;
    store.close().await;
    common::drop_schema(&url, &schema).await;
}

async fn with_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn ModStore>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = std::env::temp_dir().join(common::unique("skywarden-moderation"));
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store::open(&dir).await.unwrap();
    let m = SqliteModStore::new(&store).await.unwrap();
    test(Arc::new(m)).await;
    store.close().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

fn account(did: &str) -> SubjectRef {
    SubjectRef {
        did: did.into(),
        uri: None,
        cid: None,
    }
}

fn record(did: &str, rkey: &str) -> SubjectRef {
    SubjectRef {
        did: did.into(),
        uri: Some(format!("at://{did}/app.bsky.feed.post/{rkey}")),
        cid: Some("bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm".into()),
    }
}

fn event(kind: &str, subject: &SubjectRef, by: &str, at: &str) -> NewModEvent {
    NewModEvent::of_kind(kind, subject, by, at)
}

/// Writes `status` fields over the current (or a fresh) status.
fn set<C: Fn(&mut SubjectStatus) + Send + Sync>(
    subject: &SubjectRef,
    at: &str,
    change: C,
) -> impl Fn(Option<&SubjectStatus>) -> Transition + Send + Sync + use<C> {
    let subject = subject.clone();
    let at = at.to_string();
    move |current| {
        let mut s = current.cloned().unwrap_or_else(|| SubjectStatus {
            did: subject.did.clone(),
            uri: subject.uri.clone(),
            cid: subject.cid.clone(),
            review_state: review::NONE.into(),
            created_at: at.clone(),
            ..SubjectStatus::default()
        });
        change(&mut s);
        s.updated_at = at.clone();
        Transition {
            status: Some(s),
            close_account_records: false,
        }
    }
}

fn at(n: u32) -> String {
    format!(
        "2026-12-01T{:02}:{:02}:{:02}.000Z",
        n / 3600,
        n / 60 % 60,
        n % 60
    )
}

async fn emit(
    store: &dyn ModStore,
    e: &NewModEvent,
    t: &(dyn Fn(Option<&SubjectStatus>) -> Transition + Send + Sync),
) -> (i64, Option<SubjectStatus>) {
    match store.emit(e, t).await.unwrap() {
        Emitted::Appended { event, status } => (event.id, status),
        Emitted::DuplicateExternalId => panic!("unexpected duplicate"),
    }
}

fn query(now: &str) -> StatusQuery {
    StatusQuery {
        subject: None,
        include_all_user_records: false,
        subject_type: None,
        collections: vec![],
        review_state: None,
        takendown: None,
        appealed: None,
        reported_after: None,
        reported_before: None,
        reviewed_after: None,
        reviewed_before: None,
        last_reviewed_by: None,
        include_muted: false,
        only_muted: false,
        now: now.into(),
        tags: vec![],
        exclude_tags: vec![],
        ignore_subjects: vec![],
        comment: None,
        min_priority_score: None,
        queue: None,
        sort: StatusSort::LastReportedAt,
        descending: true,
        after: None,
        limit: 50,
    }
}

async fn events_and_statuses_are_written_together(store: Arc<dyn ModStore>) {
    let s = account("did:plc:subject");
    let mut report = event("modEventReport", &s, "did:plc:reporter", &at(1));
    report.report_type = Some("com.atproto.moderation.defs#reasonSpam".into());
    report.comment = Some("spam spam".into());
    let (id1, status) = emit(
        store.as_ref(),
        &report,
        &set(&s, &at(1), |st| {
            st.review_state = review::OPEN.into();
            st.last_reported_at = Some(at(1));
        }),
    )
    .await;
    let status = status.unwrap();
    assert_eq!(status.review_state, review::OPEN);
    assert_eq!(status.last_reported_at.as_deref(), Some(at(1).as_str()));
    let mut tag = event("modEventTag", &s, "did:plc:mod", &at(2));
    tag.added_tags = vec!["ring".into(), "wave".into()];
    let (id2, status) = emit(
        store.as_ref(),
        &tag,
        &set(&s, &at(2), |st| {
            st.tags = vec!["ring".into(), "wave".into()]
        }),
    )
    .await;
    assert!(id2 > id1);
    assert_eq!(status.unwrap().tags, ["ring", "wave"]);
    // A transition may decline to write a status (a muted reporter's report).
    let muted = event("modEventReport", &s, "did:plc:muted", &at(3));
    let (_, unchanged) = emit(store.as_ref(), &muted, &|_: Option<&SubjectStatus>| {
        Transition {
            status: None,
            close_account_records: false,
        }
    })
    .await;
    assert_eq!(unchanged.unwrap().tags, ["ring", "wave"]);

    let back = store.event(id1).await.unwrap().unwrap();
    assert_eq!(back.event, report);
    assert_eq!(store.event(9_999_999).await.unwrap(), None);
    let after: Vec<i64> = store
        .events_after(0, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(after.len(), 3);
    assert!(after.windows(2).all(|w| w[0] < w[1]));

    let find = |q: EventQuery| {
        let store = store.clone();
        async move {
            store
                .events(&q)
                .await
                .unwrap()
                .iter()
                .map(|e| e.id)
                .collect::<Vec<_>>()
        }
    };
    let base = EventQuery {
        limit: 50,
        ..EventQuery::default()
    };
    assert_eq!(
        find(EventQuery {
            subject: Some("did:plc:subject".into()),
            ascending: true,
            ..base.clone()
        })
        .await
        .len(),
        3
    );
    assert_eq!(
        find(EventQuery {
            added_tags: vec!["wave".into()],
            ..base.clone()
        })
        .await,
        [id2]
    );
    assert_eq!(
        find(EventQuery {
            added_tags: vec!["wav".into()],
            ..base.clone()
        })
        .await,
        Vec::<i64>::new()
    );
    assert_eq!(
        find(EventQuery {
            report_types: vec!["com.atproto.moderation.defs#reasonSpam".into()],
            ..base.clone()
        })
        .await,
        [id1]
    );
    assert_eq!(
        find(EventQuery {
            has_comment: Some(true),
            ..base.clone()
        })
        .await,
        [id1]
    );
    assert_eq!(
        find(EventQuery {
            comment: Some("spam s".into()),
            ..base.clone()
        })
        .await,
        [id1]
    );
    assert_eq!(
        find(EventQuery {
            comment: Some("%".into()),
            ..base.clone()
        })
        .await,
        Vec::<i64>::new()
    );
    assert_eq!(
        find(EventQuery {
            created_by: Some("did:plc:mod".into()),
            ..base.clone()
        })
        .await,
        [id2]
    );
    assert_eq!(
        find(EventQuery {
            types: vec!["tools.ozone.moderation.defs#modEventTag".into()],
            ..base.clone()
        })
        .await,
        [id2]
    );
    let newest_first = find(base.clone()).await;
    assert_eq!(newest_first[0], *after.last().unwrap());
    let page = find(EventQuery {
        after: Some(newest_first[0]),
        limit: 1,
        ..base.clone()
    })
    .await;
    assert_eq!(page, [newest_first[1]]);
    assert_eq!(
        find(EventQuery {
            created_after: Some(at(1)),
            created_before: Some(at(3)),
            ..base.clone()
        })
        .await,
        [id2]
    );
}
both!(events_and_statuses_are_written_together);

async fn external_ids_are_unique_per_subject_and_type(store: Arc<dyn ModStore>) {
    let a = account("did:plc:a");
    let b = account("did:plc:b");
    let mut e = event("modEventComment", &a, "did:plc:mod", &at(1));
    e.external_id = Some("ext-1".into());
    let t = set(&a, &at(1), |_| {});
    emit(store.as_ref(), &e, &t).await;
    assert_eq!(
        store.emit(&e, &t).await.unwrap(),
        Emitted::DuplicateExternalId
    );
    // Another subject, or another type, may reuse it.
    let mut other = e.clone();
    other.subject = b.clone();
    emit(store.as_ref(), &other, &set(&b, &at(1), |_| {})).await;
    let mut tag = e.clone();
    tag.event_type = "tools.ozone.moderation.defs#modEventTag".into();
    emit(store.as_ref(), &tag, &t).await;
    assert_eq!(store.events_after(0, 10).await.unwrap().len(), 3);
}
both!(external_ids_are_unique_per_subject_and_type);

async fn a_batch_is_one_transaction_of_events_in_order(store: Arc<dyn ModStore>) {
    let a = account("did:plc:a");
    let post = record("did:plc:a", "3kfxt2dprhx22");
    let mut first = event("modEventTag", &a, "did:plc:mod", &at(1));
    first.external_id = Some("effect-1".into());
    let mut second = event("modEventTag", &a, "did:plc:mod", &at(2));
    second.external_id = Some("effect-2".into());
    let mut on_post = event("modEventReport", &post, "did:plc:mod", &at(3));
    on_post.external_id = Some("effect-3".into());
    let tag = |t: &'static str| move |s: &mut SubjectStatus| s.tags.push(t.into());
    let (t1, t2, t3) = (
        set(&a, &at(1), tag("one")),
        set(&a, &at(2), tag("two")),
        set(&post, &at(3), |s| s.review_state = review::OPEN.into()),
    );
    let snapshot = RecordSnapshot {
        uri: post.uri.clone().unwrap(),
        cid: post.cid.clone().unwrap(),
        value: r#"{"text":"evidence"}"#.into(),
        indexed_at: at(3),
    };
    let batch = [
        BatchEmit {
            event: &first,
            transition: &t1,
            record: None,
        },
        BatchEmit {
            event: &second,
            transition: &t2,
            record: None,
        },
        // The first again: a re-run within the batch is refused like any other.
        BatchEmit {
            event: &first,
            transition: &t1,
            record: None,
        },
        BatchEmit {
            event: &on_post,
            transition: &t3,
            record: Some(&snapshot),
        },
    ];
    let out = store.emit_batch(&batch).await.unwrap();
    assert_eq!(out.len(), 4);
    let ids: Vec<i64> = out
        .iter()
        .filter_map(|e| match e {
            Emitted::Appended { event, .. } => Some(event.id),
            Emitted::DuplicateExternalId => None,
        })
        .collect();
    assert_eq!(ids.len(), 3, "{out:?}");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in order: {ids:?}");
    assert_eq!(out[2], Emitted::DuplicateExternalId);
    // The second transition saw the first one's status.
    let status = store.status("did:plc:a").await.unwrap().unwrap();
    assert_eq!(status.tags, ["one", "two"]);
    assert_eq!(
        store.record(&snapshot.uri).await.unwrap().unwrap().value,
        snapshot.value
    );
    // The whole batch again: every entry is a re-run, nothing is written.
    let again = store.emit_batch(&batch).await.unwrap();
    assert!(
        again.iter().all(|e| *e == Emitted::DuplicateExternalId),
        "{again:?}"
    );
    assert_eq!(store.events_after(0, 10).await.unwrap().len(), 3);
    assert!(store.emit_batch(&[]).await.unwrap().is_empty());
}
both!(a_batch_is_one_transaction_of_events_in_order);

async fn queue_views_follow_changes_with_and_without_queue_columns(store: Arc<dyn ModStore>) {
    // Two reported subjects; then one batch tags the first (its queue columns keep their
    // values), tags the second and escalates it, and moves a third from open to escalated
    // and back. Every view of the queue must show each subject where it now is.
    let (a, b, c) = (
        account("did:plc:qa"),
        account("did:plc:qb"),
        account("did:plc:qc"),
    );
    for (n, s) in [&a, &b, &c].into_iter().enumerate() {
        let report = event("modEventReport", s, "did:plc:reporter", &at(n as u32 + 1));
        let t = set(s, &at(n as u32 + 1), move |st| {
            st.review_state = review::OPEN.into();
            st.last_reported_at = Some(at(n as u32 + 1));
            st.priority_score = 10;
        });
        emit(store.as_ref(), &report, &t).await;
    }
    let tag = |t: &'static str| move |s: &mut SubjectStatus| s.tags.push(t.into());
    let state = |r: &'static str| move |s: &mut SubjectStatus| s.review_state = r.into();
    let (tag_a, tag_b, escalate_b, escalate_c, reopen_c) = (
        set(&a, &at(10), tag("spam")),
        set(&b, &at(11), tag("spam")),
        set(&b, &at(12), state(review::ESCALATED)),
        set(&c, &at(13), state(review::ESCALATED)),
        set(&c, &at(14), state(review::OPEN)),
    );
    let events = [
        event("modEventTag", &a, "did:plc:mod", &at(10)),
        event("modEventTag", &b, "did:plc:mod", &at(11)),
        event("modEventEscalate", &b, "did:plc:mod", &at(12)),
        event("modEventEscalate", &c, "did:plc:mod", &at(13)),
        event("modEventReport", &c, "did:plc:mod", &at(14)),
    ];
    let transitions: [&TransitionFn; 5] = [&tag_a, &tag_b, &escalate_b, &escalate_c, &reopen_c];
    let batch: Vec<BatchEmit> = events
        .iter()
        .zip(transitions)
        .map(|(event, transition)| BatchEmit {
            event,
            transition,
            record: None,
        })
        .collect();
    store.emit_batch(&batch).await.unwrap();
    let dids = |q: StatusQuery| {
        let store = store.clone();
        async move {
            let page = store.statuses(&q).await.unwrap();
            page.statuses.into_iter().map(|s| s.did).collect::<Vec<_>>()
        }
    };
    let open = StatusQuery {
        review_state: Some(review::OPEN.into()),
        ..query(&at(20))
    };
    assert_eq!(dids(open.clone()).await, ["did:plc:qc", "did:plc:qa"]);
    let escalated = StatusQuery {
        review_state: Some(review::ESCALATED.into()),
        ..query(&at(20))
    };
    assert_eq!(dids(escalated).await, ["did:plc:qb"]);
    let tagged_open = StatusQuery {
        tags: vec![vec!["spam".into()]],
        sort: StatusSort::PriorityScore,
        ..open
    };
    assert_eq!(dids(tagged_open).await, ["did:plc:qa"]);
    let a_now = store.status("did:plc:qa").await.unwrap().unwrap();
    assert_eq!(
        (
            a_now.tags.as_slice(),
            a_now.updated_at.as_str(),
            a_now.priority_score
        ),
        (&["spam".to_string()][..], at(10).as_str(), 10)
    );
    // A tag replaced by another: the tag filters follow.
    let retag = set(&a, &at(15), |s| s.tags = vec!["ham".into()]);
    let e = event("modEventTag", &a, "did:plc:mod", &at(15));
    emit(store.as_ref(), &e, &retag).await;
    let tagged = |tag: &str| StatusQuery {
        tags: vec![vec![tag.into()]],
        ..query(&at(20))
    };
    assert_eq!(dids(tagged("spam")).await, ["did:plc:qb"]);
    assert_eq!(dids(tagged("ham")).await, ["did:plc:qa"]);
    let untagged = StatusQuery {
        exclude_tags: vec!["spam".into()],
        ..query(&at(20))
    };
    assert_eq!(dids(untagged).await, ["did:plc:qc", "did:plc:qa"]);
}
both!(queue_views_follow_changes_with_and_without_queue_columns);

async fn a_long_batch_keeps_order_across_runs_and_account_closes(store: Arc<dyn ModStore>) {
    // 250 events (more than one run of the batch) over an account and two of its posts; the
    // 120th closes the account's record subjects, and the events after it see that.
    let a = account("did:plc:long");
    let posts = [
        record("did:plc:long", "3kpost1"),
        record("did:plc:long", "3kpost2"),
    ];
    let events: Vec<NewModEvent> = (0..250u32)
        .map(|i| {
            let subject = if i % 5 == 0 {
                &a
            } else {
                &posts[(i % 2) as usize]
            };
            let mut e = event("modEventReport", subject, "did:plc:mod", &at(i));
            e.external_id = Some(format!("long-{i}"));
            e
        })
        .collect();
    let transitions: Vec<Box<TransitionFn<'static>>> = (0..250u32)
        .map(|i| {
            let subject = events[i as usize].subject.clone();
            let step = set(&subject, &at(i), move |s| {
                s.priority_score += 1;
                s.tags = vec![format!("step-{}", s.priority_score)];
                if s.review_state != review::CLOSED {
                    s.review_state = review::OPEN.into();
                }
            });
            Box::new(move |current: Option<&SubjectStatus>| {
                let mut t = step(current);
                t.close_account_records = i == 120;
                t
            }) as Box<TransitionFn<'static>>
        })
        .collect();
    let batch: Vec<BatchEmit> = events
        .iter()
        .zip(&transitions)
        .map(|(event, t)| BatchEmit {
            event,
            transition: t.as_ref(),
            record: None,
        })
        .collect();
    let out = store.emit_batch(&batch).await.unwrap();
    let ids: Vec<i64> = out
        .iter()
        .map(|e| match e {
            Emitted::Appended { event, .. } => event.id,
            Emitted::DuplicateExternalId => panic!("no re-runs here: {e:?}"),
        })
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in order");
    let stored = store.events_after(0, 300).await.unwrap();
    assert_eq!(stored.len(), 250);
    for (row, (id, e)) in stored.iter().zip(ids.iter().zip(&events)) {
        assert_eq!((row.id, &row.event.external_id), (*id, &e.external_id));
    }
    // Each subject saw every event on it, in order: 50 on the account, 100 on each post.
    let account = store.status("did:plc:long").await.unwrap().unwrap();
    assert_eq!(account.priority_score, 50);
    assert_eq!(account.tags, ["step-50"]);
    for post in &posts {
        let s = store.status(post.key()).await.unwrap().unwrap();
        assert_eq!(s.priority_score, 100, "{}", post.key());
        // Closed by event 120; the set() transitions after it keep it closed.
        assert_eq!(s.review_state, review::CLOSED, "{}", post.key());
    }
    // The tag index follows the last status of each subject.
    let mut q = query(&at(1000));
    q.tags = vec![vec!["step-100".into()]];
    let tagged: HashSet<String> = store
        .statuses(&q)
        .await
        .unwrap()
        .statuses
        .into_iter()
        .filter_map(|s| s.uri)
        .collect();
    assert_eq!(tagged.len(), 2, "{tagged:?}");
    let mut q = query(&at(1000));
    q.tags = vec![vec!["step-99".into()]];
    assert!(store.statuses(&q).await.unwrap().statuses.is_empty());
    // The status each event reports is the one it left.
    match &out[249] {
        Emitted::Appended {
            status: Some(s), ..
        } => assert_eq!(s.priority_score, 100),
        other => panic!("{other:?}"),
    }
}
both!(a_long_batch_keeps_order_across_runs_and_account_closes);

async fn the_queue_filters_sorts_and_pages(store: Arc<dyn ModStore>) {
    // 40 subjects: accounts and records, reported at different times, some reviewed.
    for i in 0..40u32 {
        let did = format!("did:plc:user{i:03}");
        let subject = if i % 4 == 0 {
            record(&did, &format!("3k{i:03}"))
        } else {
            account(&did)
        };
        let e = event("modEventReport", &subject, "did:plc:reporter", &at(100 + i));
        let reported = at(100 + (i * 7) % 40);
        emit(
            store.as_ref(),
            &e,
            &set(&subject, &at(100 + i), move |st| {
                st.review_state = if i % 3 == 0 {
                    review::ESCALATED
                } else {
                    review::OPEN
                }
                .into();
                st.last_reported_at = Some(reported.clone());
                st.takendown = i % 5 == 0;
                st.appealed = i % 10 == 0;
                st.priority_score = i64::from(i % 7);
                st.tags = match i % 4 {
                    0 => vec!["a".into()],
                    1 => vec!["a".into(), "b".into()],
                    2 => vec!["b".into()],
                    _ => vec![],
                };
                if i == 39 {
                    st.mute_until = Some("2999-01-01T00:00:00.000Z".into());
                }
                if i % 2 == 0 {
                    st.last_reviewed_at = Some(at(500 + i));
                    st.last_reviewed_by = Some("did:plc:mod".into());
                }
            }),
        )
        .await;
    }
    let now = at(1000);
    let keys = |statuses: &[SubjectStatus]| -> Vec<String> {
        statuses
            .iter()
            .map(|s| s.uri.clone().unwrap_or(s.did.clone()))
            .collect()
    };
    // Paging the default view: every unmuted subject once, newest report first.
    let mut q = query(&now);
    q.limit = 7;
    let mut seen = Vec::new();
    let mut last_reported = String::from("~");
    loop {
        let page = store.statuses(&q).await.unwrap();
        for s in &page.statuses {
            let r = s.last_reported_at.clone().unwrap();
            assert!(r <= last_reported, "not sorted: {r} after {last_reported}");
            last_reported = r;
        }
        seen.extend(keys(&page.statuses));
        match page.cursor {
            Some(c) => q.after = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 39, "{seen:?}");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 39);
    let count = |q: StatusQuery| {
        let store = store.clone();
        async move {
            store
                .statuses(&StatusQuery { limit: 100, ..q })
                .await
                .unwrap()
                .statuses
        }
    };
    let muted = count(StatusQuery {
        only_muted: true,
        ..query(&now)
    })
    .await;
    assert_eq!(keys(&muted), ["did:plc:user039"]);
    assert_eq!(
        count(StatusQuery {
            include_muted: true,
            ..query(&now)
        })
        .await
        .len(),
        40
    );
    let escalated = count(StatusQuery {
        review_state: Some(review::ESCALATED.into()),
        ..query(&now)
    })
    .await;
    assert_eq!(escalated.len(), 13); // 0, 3, ..., 36 (39 is muted)
    assert!(
        escalated
            .iter()
            .all(|s| s.review_state == review::ESCALATED)
    );
    assert_eq!(
        count(StatusQuery {
            takendown: Some(true),
            ..query(&now)
        })
        .await
        .len(),
        8
    );
    assert_eq!(
        count(StatusQuery {
            appealed: Some(true),
            ..query(&now)
        })
        .await
        .len(),
        4
    );
    assert_eq!(
        count(StatusQuery {
            subject_type: Some(SubjectKind::Record),
            ..query(&now)
        })
        .await
        .len(),
        10
    );
    assert_eq!(
        count(StatusQuery {
            collections: vec!["app.bsky.feed.post".into()],
            ..query(&now)
        })
        .await
        .len(),
        10
    );
    // Tags: entries OR'ed; within one, AND.
    assert_eq!(
        count(StatusQuery {
            tags: vec![vec!["a".into()]],
            ..query(&now)
        })
        .await
        .len(),
        20
    );
    assert_eq!(
        count(StatusQuery {
            tags: vec![vec!["a".into(), "b".into()]],
            ..query(&now)
        })
        .await
        .len(),
        10
    );
    assert_eq!(
        count(StatusQuery {
            tags: vec![vec!["a".into()], vec!["b".into()]],
            ..query(&now)
        })
        .await
        .len(),
        30
    );
    assert_eq!(
        count(StatusQuery {
            exclude_tags: vec!["a".into()],
            ..query(&now)
        })
        .await
        .len(),
        19
    );
    assert_eq!(
        count(StatusQuery {
            min_priority_score: Some(6),
            ..query(&now)
        })
        .await
        .len(),
        5
    );
    let one = count(StatusQuery {
        subject: Some("did:plc:user001".into()),
        ..query(&now)
    })
    .await;
    assert_eq!(keys(&one), ["did:plc:user001"]);
    let all_of_user = count(StatusQuery {
        subject: Some("did:plc:user004".into()),
        include_all_user_records: true,
        ..query(&now)
    })
    .await;
    assert_eq!(
        keys(&all_of_user),
        ["at://did:plc:user004/app.bsky.feed.post/3k004"]
    );
    assert_eq!(
        count(StatusQuery {
            ignore_subjects: vec!["did:plc:user001".into()],
            ..query(&now)
        })
        .await
        .len(),
        38
    );
    assert_eq!(
        count(StatusQuery {
            last_reviewed_by: Some("did:plc:mod".into()),
            ..query(&now)
        })
        .await
        .len(),
        20
    );
    assert_eq!(
        count(StatusQuery {
            reviewed_before: Some(at(510)),
            ..query(&now)
        })
        .await
        .len(),
        5
    );
    assert_eq!(
        count(StatusQuery {
            reported_after: Some(at(135)),
            ..query(&now)
        })
        .await
        .len(),
        4
    );
    // Sorted by priority, ascending: scores never decrease.
    let by_priority = count(StatusQuery {
        sort: StatusSort::PriorityScore,
        descending: false,
        ..query(&now)
    })
    .await;
    assert!(
        by_priority
            .windows(2)
            .all(|w| w[0].priority_score <= w[1].priority_score)
    );
    // Queues split the subjects: disjoint, and together everything.
    let mut union = HashSet::new();
    for index in 0..3 {
        let part = count(StatusQuery {
            queue: Some((3, index)),
            ..query(&now)
        })
        .await;
        for k in keys(&part) {
            assert!(union.insert(k), "a subject in two queues");
        }
    }
    assert_eq!(union.len(), 39);
}
both!(the_queue_filters_sorts_and_pages);

async fn concurrent_events_on_one_subject_all_count(store: Arc<dyn ModStore>) {
    let s = account("did:plc:busy");
    let mut tasks = Vec::new();
    for i in 0..24 {
        let store = store.clone();
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut e = event("modEventTag", &s, "did:plc:mod", &at(i));
            e.added_tags = vec![format!("t{i}")];
            let tag = format!("t{i}");
            let t = set(&s, &at(i), move |st| st.tags.push(tag.clone()));
            emit(store.as_ref(), &e, &t).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let status = store.status("did:plc:busy").await.unwrap().unwrap();
    // Each transition saw the previous one's status: no update was lost.
    assert_eq!(status.tags.len(), 24);
    let q = StatusQuery {
        tags: vec![vec!["t7".into()]],
        include_muted: true,
        ..query(&at(0))
    };
    assert_eq!(store.statuses(&q).await.unwrap().statuses.len(), 1);
}
both!(concurrent_events_on_one_subject_all_count);

async fn closing_an_accounts_records(store: Arc<dyn ModStore>) {
    let did = "did:plc:owner";
    for rkey in ["3ka", "3kb"] {
        let r = record(did, rkey);
        emit(
            store.as_ref(),
            &event("modEventReport", &r, "did:plc:r", &at(1)),
            &set(&r, &at(1), |st| st.review_state = review::OPEN.into()),
        )
        .await;
    }
    let a = account(did);
    emit(
        store.as_ref(),
        &event("modEventTakedown", &a, "did:plc:mod", &at(2)),
        &|_: Option<&SubjectStatus>| Transition {
            status: None,
            close_account_records: true,
        },
    )
    .await;
    for rkey in ["3ka", "3kb"] {
        let s = store
            .status(&format!("at://{did}/app.bsky.feed.post/{rkey}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(s.review_state, review::CLOSED);
        assert_eq!(s.last_reviewed_by.as_deref(), Some("did:plc:mod"));
    }
}
both!(closing_an_accounts_records);

/// A moderator added by the admin.
fn moderator() -> Member {
    Member {
        did: "did:plc:mod".into(),
        role: "tools.ozone.team.defs#roleModerator".into(),
        disabled: false,
        created_at: at(1),
        updated_at: at(1),
        last_updated_by: "did:plc:admin".into(),
    }
}

async fn team_records_and_cursors(store: Arc<dyn ModStore>) {
    let m = moderator();
    assert!(store.add_member(&m).await.unwrap());
    assert!(!store.add_member(&m).await.unwrap());
    let mut changed = m.clone();
    changed.disabled = true;
    changed.role = "tools.ozone.team.defs#roleTriage".into();
    assert!(store.update_member(&changed).await.unwrap());
    assert_eq!(store.member("did:plc:mod").await.unwrap(), Some(changed));
    assert_eq!(store.members().await.unwrap().len(), 1);
    assert!(store.delete_member("did:plc:mod").await.unwrap());
    assert!(!store.delete_member("did:plc:mod").await.unwrap());
    assert!(!store.update_member(&m).await.unwrap());

    let r = RecordSnapshot {
        uri: "at://did:plc:a/app.bsky.feed.post/3k".into(),
        cid: "bafy1".into(),
        value: r#"{"text":"hi"}"#.into(),
        indexed_at: at(1),
    };
    store.put_record(&r).await.unwrap();
    let r2 = RecordSnapshot {
        cid: "bafy2".into(),
        ..r.clone()
    };
    store.put_record(&r2).await.unwrap();
    assert_eq!(store.record(&r.uri).await.unwrap(), Some(r2));
    assert_eq!(store.record("at://x/y/z").await.unwrap(), None);

    for method in ["tools.ozone.team.addMember", "tools.ozone.set.addValues"] {
        store
            .audit(&AuditEntry {
                id: 0,
                at: at(1),
                actor: "did:plc:admin".into(),
                method: method.into(),
                input: "{}".into(),
            })
            .await
            .unwrap();
    }
    let trail = store.audit_after(0, 10).await.unwrap();
    assert_eq!(trail.len(), 2);
    assert_eq!(trail[1].method, "tools.ozone.set.addValues");
    assert_eq!(store.audit_after(trail[0].id, 10).await.unwrap().len(), 1);

    assert_eq!(store.cursor("pds").await.unwrap(), 0);
    store.set_cursor("pds", 42).await.unwrap();
    store.set_cursor("pds", 43).await.unwrap();
    assert_eq!(store.cursor("pds").await.unwrap(), 43);
}
both!(team_records_and_cursors);

async fn an_event_sink_reads_only_what_it_selects(store: Arc<dyn ModStore>) {
    let empty = EventSelection::default();
    let nothing = store.events_for_sink(0, 10, &empty).await.unwrap();
    assert_eq!(
        (nothing.rows.len(), nothing.cursor, nothing.full),
        (0, 0, false)
    );
    let a = account("did:plc:a");
    let engine = r#"{"name":"skywarden/rules","meta":{"rule":"r"}}"#;
    let log = [
        ("modEventTag", Some(engine)),
        ("modEventLabel", None),
        ("modEventTakedown", Some(engine)),
        ("modEventComment", None),
        ("modEventLabel", Some(engine)),
        ("modEventTakedown", Some(r#"{"name":"other"}"#)),
    ];
    let mut ids = Vec::new();
    for (i, (kind, tool)) in log.iter().enumerate() {
        let mut e = event(kind, &a, "did:plc:mod", &at(i as u32));
        e.mod_tool = tool.map(str::to_string);
        ids.push(
            emit(store.as_ref(), &e, &set(&a, &at(i as u32), |_| {}))
                .await
                .0,
        );
    }
    let types = |kinds: &[&str]| -> Vec<String> {
        kinds
            .iter()
            .map(|k| format!("tools.ozone.moderation.defs#{k}"))
            .collect()
    };
    let page_ids = |page: &EventPage| -> Vec<i64> { page.rows.iter().map(|r| r.id).collect() };
    // Labels and takedowns not filed by the engine (no tool counts as "not the engine").
    let labels = EventSelection {
        types: types(&["modEventLabel", "modEventTakedown"]),
        tool: ToolSelection::Except("skywarden/rules".into()),
    };
    let first = store.events_for_sink(0, 1, &labels).await.unwrap();
    assert_eq!(
        (page_ids(&first), first.cursor, first.full),
        (vec![ids[1]], ids[1], true)
    );
    let rest = store
        .events_for_sink(first.cursor, 10, &labels)
        .await
        .unwrap();
    assert_eq!(
        (page_ids(&rest), rest.cursor, rest.full),
        (vec![ids[5]], ids[5], false)
    );
    // The engine's events, of every type; a page that is not full resumes past the log's end.
    let engine_only = EventSelection {
        types: Vec::new(),
        tool: ToolSelection::Only("skywarden/rules".into()),
    };
    let page = store.events_for_sink(0, 10, &engine_only).await.unwrap();
    assert_eq!(page_ids(&page), [ids[0], ids[2], ids[4]]);
    assert_eq!(page.cursor, ids[5]);
    let all = store.events_for_sink(ids[3], 10, &empty).await.unwrap();
    assert_eq!(page_ids(&all), [ids[4], ids[5]]);
}
both!(an_event_sink_reads_only_what_it_selects);

/// A new data directory keeps the queue in `moderation.db`; one whose queue an earlier version
/// kept in `skywarden.db` goes on using it, so no queue is left behind on upgrade.
#[tokio::test]
async fn the_queue_has_its_own_file_unless_it_is_already_in_the_engines() {
    use skywarden_store::ENGINE_DB;
    use skywarden_store::moderation::MODERATION_DB;
    let member = moderator();
    let has_queue = |path: std::path::PathBuf| async move {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", path.display()))
            .await
            .unwrap();
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'mod_events'",
        )
        .fetch_optional(&pool)
        .await
        .unwrap();
        pool.close().await;
        found.is_some()
    };

    // New: the engine's database and the queue's are two files.
    let fresh = std::env::temp_dir().join(common::unique("skywarden-modfile"));
    std::fs::create_dir_all(&fresh).unwrap();
    let engine = Store::open(&fresh).await.unwrap();
    let queue = SqliteModStore::open(&fresh, 1).await.unwrap();
    assert!(queue.add_member(&member).await.unwrap());
    queue.close().await;
    engine.close().await;
    assert!(has_queue(fresh.join(MODERATION_DB)).await);
    assert!(!has_queue(fresh.join(ENGINE_DB)).await);
    assert_eq!(
        SqliteModStore::file_in(&fresh).await.unwrap(),
        MODERATION_DB
    );
    std::fs::remove_dir_all(&fresh).unwrap();

    // Earlier layout: the queue's tables in skywarden.db stay where they are.
    let legacy = std::env::temp_dir().join(common::unique("skywarden-modfile"));
    std::fs::create_dir_all(&legacy).unwrap();
    let engine = Store::open(&legacy).await.unwrap();
    let shared = SqliteModStore::new(&engine).await.unwrap();
    assert!(shared.add_member(&member).await.unwrap());
    engine.close().await;
    assert_eq!(SqliteModStore::file_in(&legacy).await.unwrap(), ENGINE_DB);
    let reopened = SqliteModStore::open(&legacy, 1).await.unwrap();
    assert_eq!(reopened.member("did:plc:mod").await.unwrap(), Some(member));
    reopened.close().await;
    assert!(!legacy.join(MODERATION_DB).exists());
    std::fs::remove_dir_all(&legacy).unwrap();
}
