//! One test suite, run against both label stores (see `common` for the harness).

use skywarden_store::Store;
use skywarden_store::labels::{
    LabelQuery, LabelStore, NewLabel, PgLabelStore, QueryCursor, Resign, SqliteLabelStore,
    StoredLabel, UriPattern,
};
use std::sync::Arc;

mod common;

async fn with_postgres<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn LabelStore>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let schema = common::unique("labels_test");
    let url = common::postgres_url();
    let store = PgLabelStore::connect(&url, Some(&schema))
        .await
        .unwrap_or_else(|e| {
            panic!("the Postgres label tests need a server at {url} (SKYWARDEN_TEST_POSTGRES): {e}")
        });
    test(Arc::new(store.clone())).await;
    store.close().await;
    common::drop_schema(&url, &schema).await;
}

async fn with_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn LabelStore>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = std::env::temp_dir().join(common::unique("skywarden-labels"));
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store::open(&dir).await.unwrap();
    let labels = SqliteLabelStore::new(&store).await.unwrap();
    test(Arc::new(labels)).await;
    store.close().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

fn label(uri: &str, val: &str, neg: bool) -> StoredLabel {
    StoredLabel {
        ver: 1,
        src: "did:plc:labeler".into(),
        uri: uri.into(),
        cid: None,
        val: val.into(),
        neg,
        cts: "2026-12-01T00:00:00.000Z".into(),
        exp: None,
        exp_micros: None,
        sig: vec![7; 64],
        signing_key: "did:key:one".into(),
    }
}

fn new(l: StoredLabel, key: Option<&str>) -> NewLabel {
    NewLabel {
        label: l,
        idempotency_key: key.map(str::to_string),
    }
}

fn query(patterns: &[&str]) -> LabelQuery {
    LabelQuery {
        patterns: patterns
            .iter()
            .map(|p| UriPattern::parse(p).unwrap())
            .collect(),
        sources: Vec::new(),
        after: None,
        limit: 50,
        now_micros: 1_000,
    }
}

fn vals(page: &skywarden_store::labels::LabelPage) -> Vec<(String, String)> {
    page.labels
        .iter()
        .map(|r| (r.label.uri.clone(), r.label.val.clone()))
        .collect()
}

async fn append_is_ordered_and_idempotent(store: Arc<dyn LabelStore>) {
    assert_eq!(store.head().await.unwrap(), 0);
    let seqs = store
        .append(&[
            new(label("did:plc:a", "spam", false), Some("k1")),
            new(label("did:plc:b", "spam", false), Some("k2")),
        ])
        .await
        .unwrap();
    let (a, b) = (seqs[0].unwrap(), seqs[1].unwrap());
    assert!(b > a);
    let again = store
        .append(&[
            new(label("did:plc:a", "spam", false), Some("k1")),
            new(label("did:plc:c", "spam", false), None),
        ])
        .await
        .unwrap();
    assert_eq!(again[0], None, "a used idempotency key appends nothing");
    let c = again[1].unwrap();
    assert!(c > b);
    assert_eq!(store.head().await.unwrap(), c);
    let rows = store.after(0, 10).await.unwrap();
    assert_eq!(
        rows.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [a, b, c],
        "the stream is in seq order"
    );
    assert_eq!(rows[0].label, label("did:plc:a", "spam", false));
    assert_eq!(store.after(a, 1).await.unwrap()[0].seq, b);
}
both!(append_is_ordered_and_idempotent);

async fn negation_replaces_the_current_label(store: Arc<dyn LabelStore>) {
    let mut with_cid = label("at://did:plc:a/app.bsky.feed.post/1", "spam", false);
    with_cid.cid = Some("bafyreib".into());
    store
        .append(&[
            new(label("did:plc:a", "spam", false), None),
            new(label("did:plc:a", "rude", false), None),
            new(with_cid.clone(), None),
        ])
        .await
        .unwrap();
    store
        .append(&[new(label("did:plc:a", "spam", true), None)])
        .await
        .unwrap();
    let page = store.query(&query(&["did:plc:a"])).await.unwrap();
    assert_eq!(vals(&page), [("did:plc:a".into(), "rude".into())]);
    let stream = store.after(0, 10).await.unwrap();
    assert_eq!(
        stream.len(),
        4,
        "the stream keeps the negation and what it negated"
    );
    assert!(stream[3].label.neg);
    // Labelling again after a negation makes the label current again.
    store
        .append(&[new(label("did:plc:a", "spam", false), None)])
        .await
        .unwrap();
    let page = store.query(&query(&["did:plc:a"])).await.unwrap();
    assert_eq!(page.labels.len(), 2);
    let page = store.query(&query(&["at://did:plc:a/*"])).await.unwrap();
    assert_eq!(page.labels.len(), 1);
    assert_eq!(page.labels[0].label.cid.as_deref(), Some("bafyreib"));
    // Labels on two versions of a record are both current; `current` finds them by value.
    let mut other_version = with_cid.clone();
    other_version.cid = Some("bafyreic".into());
    store.append(&[new(other_version, None)]).await.unwrap();
    let current = store
        .current("did:plc:labeler", &with_cid.uri, "spam")
        .await
        .unwrap();
    let cids: Vec<_> = current
        .iter()
        .map(|r| r.label.cid.clone().unwrap())
        .collect();
    assert_eq!(cids, ["bafyreib", "bafyreic"]);
    assert!(
        store
            .current("did:plc:labeler", &with_cid.uri, "rude")
            .await
            .unwrap()
            .is_empty()
    );
}
both!(negation_replaces_the_current_label);

async fn queries_match_patterns_sources_and_expiry_and_page(store: Arc<dyn LabelStore>) {
    let mut batch = Vec::new();
    for did in ["did:plc:aa", "did:plc:ab", "did:plc:b"] {
        batch.push(new(label(did, "spam", false), None));
        for rkey in 0..3 {
            batch.push(new(
                label(
                    &format!("at://{did}/app.bsky.feed.post/{rkey}"),
                    "spam",
                    false,
                ),
                None,
            ));
        }
    }
    let mut other = label("did:plc:aa", "nsfw", false);
    other.src = "did:plc:other".into();
    batch.push(new(other, None));
    let mut expired = label("did:plc:aa", "old", false);
    expired.exp = Some("1970-01-01T00:00:00.000Z".into());
    expired.exp_micros = Some(1_000);
    batch.push(new(expired, None));
    let mut later = label("did:plc:aa", "temp", false);
    later.exp_micros = Some(2_000);
    batch.push(new(later, None));
    store.append(&batch).await.unwrap();

    let page = store.query(&query(&["did:plc:aa"])).await.unwrap();
    let got: Vec<String> = page.labels.iter().map(|r| r.label.val.clone()).collect();
    assert_eq!(got, ["spam", "nsfw", "temp"], "expired labels are left out");
    let mut q = query(&["did:plc:aa"]);
    q.sources = vec!["did:plc:other".into()];
    assert_eq!(
        vals(&store.query(&q).await.unwrap()),
        [("did:plc:aa".into(), "nsfw".into())]
    );

    let page = store.query(&query(&["at://did:plc:a*"])).await.unwrap();
    assert_eq!(
        page.labels.len(),
        6,
        "a prefix matches both did:plc:aa and did:plc:ab"
    );
    assert!(page.cursor.is_none());
    let all = store.query(&query(&["*"])).await.unwrap();
    assert_eq!(all.labels.len(), 14);

    // Pages of 4 over several patterns return everything once, in (uri, seq) order.
    let patterns = [
        "at://did:plc:b/*",
        "did:plc:ab",
        "at://did:plc:aa/*",
        "did:plc:b",
    ];
    let mut seen = Vec::new();
    let mut q = query(&patterns);
    q.limit = 4;
    loop {
        let page = store.query(&q).await.unwrap();
        assert!(page.labels.len() <= 4);
        seen.extend(page.labels.iter().map(|r| (r.label.uri.clone(), r.seq)));
        match page.cursor {
            Some(c) => q.after = Some(QueryCursor::decode(&c.encode()).unwrap()),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen, sorted, "ordered by (uri, seq), no repeats");
    assert_eq!(seen.len(), 3 + 1 + 3 + 1);
}
both!(queries_match_patterns_sources_and_expiry_and_page);

async fn compaction_removes_only_replaced_rows(store: Arc<dyn LabelStore>) {
    let first = store
        .append(&[new(label("did:plc:a", "spam", false), None)])
        .await
        .unwrap()[0]
        .unwrap();
    store
        .append(&[
            new(label("did:plc:a", "spam", true), None),
            new(label("did:plc:b", "spam", false), None),
        ])
        .await
        .unwrap();
    assert_eq!(store.compacted_through().await.unwrap(), 0);
    let head = store.head().await.unwrap();
    assert_eq!(store.compact(head).await.unwrap(), 1);
    assert_eq!(store.compacted_through().await.unwrap(), head);
    let rows = store.after(0, 10).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.seq != first));
    assert!(rows[0].label.neg, "the negation stays: it is current");
    store.compact(1).await.unwrap();
    assert_eq!(
        store.compacted_through().await.unwrap(),
        head,
        "the mark never moves back"
    );
    // Idempotency keys outlive compaction.
    store
        .append(&[new(label("did:plc:k", "spam", false), Some("kept"))])
        .await
        .unwrap();
    store
        .append(&[new(label("did:plc:k", "spam", true), None)])
        .await
        .unwrap();
    store.compact(store.head().await.unwrap()).await.unwrap();
    let again = store
        .append(&[new(label("did:plc:k", "spam", false), Some("kept"))])
        .await
        .unwrap();
    assert_eq!(again, [None]);
}
both!(compaction_removes_only_replaced_rows);

async fn resigning_keeps_positions(store: Arc<dyn LabelStore>) {
    let mut batch = Vec::new();
    for i in 0..5 {
        let mut l = label(&format!("did:plc:{i}"), "spam", false);
        if i % 2 == 0 {
            l.signing_key = "did:key:two".into();
        }
        batch.push(new(l, None));
    }
    store.append(&batch).await.unwrap();
    let old = store.signed_by_other("did:key:two", 0, 10).await.unwrap();
    assert_eq!(old.len(), 2);
    let updates: Vec<Resign> = old
        .iter()
        .map(|r| Resign {
            seq: r.seq,
            sig: vec![9; 64],
            signing_key: "did:key:two".into(),
        })
        .collect();
    store.resign(&updates).await.unwrap();
    assert!(
        store
            .signed_by_other("did:key:two", 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let rows = store.after(0, 10).await.unwrap();
    assert_eq!(rows.len(), 5);
    let resigned = rows.iter().find(|r| r.seq == old[0].seq).unwrap();
    assert_eq!(resigned.label.sig, vec![9; 64]);
    assert_eq!(resigned.label.uri, old[0].label.uri);
}
both!(resigning_keeps_positions);

/// Concurrent writers; a reader tailing the stream must never find a row appear below one it
/// has already read (that would be a gap for a live subscriber).
async fn rows_become_visible_in_seq_order(store: Arc<dyn LabelStore>) {
    let writers = 4;
    let per_writer = 60;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_writer {
                store
                    .append(&[new(
                        label(&format!("did:plc:w{w}n{i}"), "spam", false),
                        None,
                    )])
                    .await
                    .unwrap();
            }
        }));
    }
    let reader = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut last = 0;
            let mut read = Vec::new();
            while read.len() < writers * per_writer {
                for row in store.after(last, 1000).await.unwrap() {
                    last = row.seq;
                    read.push(row.seq);
                }
                tokio::task::yield_now().await;
            }
            read
        })
    };
    for t in tasks {
        t.await.unwrap();
    }
    let read = reader.await.unwrap();
    let all: Vec<i64> = store
        .after(0, 10_000)
        .await
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(read, all, "the tailing reader saw every row, in order");
}
both!(rows_become_visible_in_seq_order);
