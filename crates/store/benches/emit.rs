//! Filing moderation events in batches on the embedded SQLite store, as the engine's
//! moderation sink does, in events per second: first reports (new subjects), then twice a
//! retag of every subject (one tag replaced by another: the tag index loses one row and gains
//! one; the queue columns keep their values), then reports on the queued subjects (the queue
//! columns change).
//!
//!   cargo bench -p skywarden-store --bench emit
//!
//! Each phase files one event per subject for `SUBJECTS` subjects, in batches of `BATCH`, in
//! a fresh database under the system temp directory per round. The transitions are plain
//! closures; the state machine is `skywarden-moderation`'s and is not what is measured here.

use skywarden_store::moderation::{
    BatchEmit, ModStore, NewModEvent, SqliteModStore, SubjectRef, SubjectStatus, Transition,
    TransitionFn, review,
};
use std::time::Instant;

const SUBJECTS: usize = 100_000;
const BATCH: usize = 100;
const ROUNDS: usize = 2;

fn subject(i: usize) -> SubjectRef {
    SubjectRef {
        did: format!("did:plc:bench{i:020}"),
        uri: None,
        cid: None,
    }
}

fn event(kind: &str, subject: &SubjectRef, at: &str, external: String) -> NewModEvent {
    NewModEvent {
        subject_json: format!(r#"{{"did":"{}"}}"#, subject.did),
        external_id: Some(external),
        ..NewModEvent::of_kind(kind, subject, "did:plc:benchservice", at)
    }
}

/// A phase: how each subject's status changes.
#[derive(Clone, Copy)]
enum Phase {
    FirstReport,
    Tag,
    Report,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::FirstReport => "first reports (new subjects)",
            Phase::Tag => "retags on queued subjects",
            Phase::Report => "reports on queued subjects",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Phase::Tag => "modEventTag",
            _ => "modEventReport",
        }
    }
}

fn transition(phase: Phase, at: String) -> impl Fn(Option<&SubjectStatus>) -> Transition {
    move |current| {
        let mut s = current.cloned().unwrap_or_else(|| SubjectStatus {
            review_state: review::NONE.into(),
            created_at: at.clone(),
            ..SubjectStatus::default()
        });
        match phase {
            Phase::FirstReport | Phase::Report => {
                s.review_state = review::OPEN.into();
                s.last_reported_at = Some(at.clone());
                s.priority_score = (s.priority_score + 1).min(100);
            }
            Phase::Tag => s.tags = vec![at.clone()],
        }
        s.updated_at = at.clone();
        Transition {
            status: Some(s),
            close_account_records: false,
        }
    }
}

async fn file(store: &dyn ModStore, phase: Phase, n: usize) -> f64 {
    let subjects: Vec<SubjectRef> = (0..SUBJECTS).map(subject).collect();
    // Each phase one hour later than the one before, and with external ids of its own.
    let at = format!("2026-12-01T{:02}:00:00.000Z", n + 1);
    let events: Vec<NewModEvent> = subjects
        .iter()
        .enumerate()
        .map(|(i, s)| event(phase.kind(), s, &at, format!("phase-{n}-{i}")))
        .collect();
    let transitions: Vec<_> = (0..SUBJECTS)
        .map(|_| transition(phase, at.clone()))
        .collect();
    let started = Instant::now();
    for (events, transitions) in events.chunks(BATCH).zip(transitions.chunks(BATCH)) {
        let batch: Vec<BatchEmit> = events
            .iter()
            .zip(transitions)
            .map(|(event, t)| BatchEmit {
                event,
                transition: t as &TransitionFn,
                record: None,
            })
            .collect();
        store.emit_batch(&batch).await.unwrap();
    }
    SUBJECTS as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return; // `cargo test --benches` probes benches; this one takes seconds per phase.
    }
    for round in 0..ROUNDS {
        let dir = std::env::temp_dir().join(format!(
            "skywarden-emit-bench-{}-{round}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let store = SqliteModStore::open(&dir, 1).await.unwrap();
        let mut line = format!("round {}:", round + 1);
        for (n, phase) in [Phase::FirstReport, Phase::Tag, Phase::Tag, Phase::Report]
            .into_iter()
            .enumerate()
        {
            let rate = file(&store, phase, n).await;
            line.push_str(&format!("  {} {:.0} events/s;", phase.name(), rate));
        }
        println!("{line}");
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
