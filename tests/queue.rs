//! The job queue's guarantees, on both engines: transactional enqueue, dedupe, stored retry
//! delays, fencing, dead jobs and replay, periodic windows, graceful shutdown, and the
//! operators' view.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Engine, TestDb, TestServer};
use job_queue::{Job, KindOptions, NewJob, Outcome, Periodic, Queue, Worker, WorkerOptions};
use reqwest::StatusCode;
use serde_json::json;
use switchyard::clock::Clock;
use switchyard::db::Db;
use tokio::sync::{oneshot, Notify};

on_both_engines!(
    an_enqueue_exists_only_if_its_transaction_commits,
    a_duplicate_dedupe_key_returns_the_existing_job,
    a_batch_enqueue_skips_known_dedupe_keys_and_every_new_job_runs,
    a_stored_retry_delay_survives_a_restart,
    a_stale_lease_holders_outcome_is_rejected,
    exhausted_jobs_die_with_their_error_and_can_be_replayed,
    a_panicking_handler_is_retried,
    each_periodic_window_runs_once_across_schedulers,
    shutdown_lets_running_jobs_finish_and_releases_the_rest,
    operators_see_counts_on_the_api_and_in_metrics,
    an_idle_worker_wakes_for_a_committed_job_without_waiting_for_its_poll,
    a_long_handler_keeps_its_lease,
    done_jobs_are_purged_after_the_retention_and_dead_ones_kept,
    a_snoozed_job_waits_without_using_an_attempt,
    jobs_handed_over_at_enqueue_run_at_commit_without_a_claim,
    a_handoff_that_is_not_started_gives_its_jobs_back,
    a_job_falling_due_runs_on_time_while_handed_jobs_keep_the_worker_busy,
    a_worker_looking_for_due_jobs_does_not_turn_away_handed_ones,
    a_restarted_node_takes_back_its_own_leases_at_once_and_no_one_elses,
);

struct Fixture {
    _db: TestDb,
    db: Db,
    clock: Clock,
    queue: Queue,
}

async fn fixture(engine: Engine) -> Fixture {
    let test_db = TestDb::create(engine).await;
    let db = Db::connect(&test_db.url, 5).await.unwrap();
    db.migrate().await.unwrap();
    let clock = Clock::default();
    let now = {
        let clock = clock.clone();
        Arc::new(move || clock.now_ms())
    };
    let queue = Queue::new(db.writer().clone(), db.dialect().queue_engine(), now);
    Fixture {
        _db: test_db,
        db,
        clock,
        queue,
    }
}

impl Fixture {
    /// Enqueues `job` through a handoff in a transaction of its own and starts it after the
    /// commit; returns how many jobs the handoff leased to this process's worker (0 or 1).
    async fn enqueue_handed(&self, job: NewJob) -> usize {
        let mut tx = self.db.write_global().await.unwrap();
        let mut handoff = self.queue.handoff();
        handoff.enqueue_in(&mut tx, job).await.unwrap();
        let handed = handoff.handed();
        tx.commit().await.unwrap();
        handoff.start();
        handed
    }

    /// Enqueues a job of `kind` due now; returns its id.
    async fn enqueue(&self, kind: &str, payload: serde_json::Value) -> String {
        self.queue
            .enqueue(NewJob::new(kind, payload))
            .await
            .unwrap()
            .id
    }
}

fn fast() -> WorkerOptions {
    WorkerOptions {
        poll_interval: Duration::from_millis(10),
        maintenance_interval: Duration::from_millis(50),
        ..WorkerOptions::default()
    }
}

fn one_at_a_time() -> KindOptions {
    KindOptions {
        concurrency: 1,
        ..KindOptions::default()
    }
}

fn two_at_a_time() -> KindOptions {
    KindOptions {
        concurrency: 2,
        ..KindOptions::default()
    }
}

/// (state, attempt, run_at, last_error)
async fn job(queue: &Queue, id: &str) -> (String, i64, i64, Option<String>) {
    sqlx::query_as("SELECT state, attempt, run_at, last_error FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(queue.pool())
        .await
        .unwrap()
}

async fn count_jobs(queue: &Queue) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM jobs")
        .fetch_one(queue.pool())
        .await
        .unwrap();
    n
}

async fn wait_for_state(queue: &Queue, id: &str, state: &str) {
    for _ in 0..500 {
        if job(queue, id).await.0 == state {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("job {id} never reached {state}: {:?}", job(queue, id).await);
}

/// A handler that signals `ran` each time it runs a job, and is done.
fn signals(
    ran: &Arc<Notify>,
) -> impl Fn(Job) -> std::future::Ready<Outcome> + Send + Sync + 'static {
    let ran = ran.clone();
    move |_job| {
        ran.notify_one();
        std::future::ready(Outcome::Done)
    }
}

/// Starts `worker`; the returned sender stops it, and the handle ends when it has stopped.
fn spawn(worker: Worker) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        worker
            .run(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (stop, handle)
}

async fn an_enqueue_exists_only_if_its_transaction_commits(engine: Engine) {
    let f = fixture(engine).await;
    let mut tx = f.db.write_global().await.unwrap();
    f.queue
        .enqueue_in(&mut tx, NewJob::new("send", json!({"n": 1})))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(
        count_jobs(&f.queue).await,
        0,
        "a rolled-back enqueue leaves no job"
    );

    let mut tx = f.db.write_global().await.unwrap();
    let enqueued = f
        .queue
        .enqueue_in(&mut tx, NewJob::new("send", json!({"n": 2})))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(job(&f.queue, &enqueued.id).await.0, "available");
    assert_eq!(count_jobs(&f.queue).await, 1);
}

async fn a_duplicate_dedupe_key_returns_the_existing_job(engine: Engine) {
    let f = fixture(engine).await;
    let first = f
        .queue
        .enqueue(NewJob::new("report", json!({})).dedupe_key("report:1"))
        .await
        .unwrap();
    let again = f
        .queue
        .enqueue(NewJob::new("report", json!({"other": true})).dedupe_key("report:1"))
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert_eq!(
        again,
        job_queue::Enqueued {
            id: first.id.clone(),
            duplicate: true
        }
    );
    let elsewhere = f
        .queue
        .enqueue(
            NewJob::new("report", json!({}))
                .dedupe_key("report:1")
                .on_queue("other"),
        )
        .await
        .unwrap();
    assert!(!elsewhere.duplicate, "dedupe keys are unique per queue");
    let keyless_a = f
        .queue
        .enqueue(NewJob::new("report", json!({})))
        .await
        .unwrap();
    let keyless_b = f
        .queue
        .enqueue(NewJob::new("report", json!({})))
        .await
        .unwrap();
    assert_ne!(keyless_a.id, keyless_b.id);
    assert_eq!(count_jobs(&f.queue).await, 4);
}

async fn a_batch_enqueue_skips_known_dedupe_keys_and_every_new_job_runs(engine: Engine) {
    let f = fixture(engine).await;
    f.queue
        .enqueue(NewJob::new("send", json!({"n": 0})).dedupe_key("send:0"))
        .await
        .unwrap();
    let batch: Vec<NewJob> = (0..3)
        .map(|n| NewJob::new("send", json!({ "n": n })).dedupe_key(format!("send:{n}")))
        .chain([NewJob::new("send", json!({"n": 3}))])
        .collect();

    let mut tx = f.db.write_global().await.unwrap();
    let mut handoff = f.queue.handoff();
    handoff.enqueue_all_in(&mut tx, &batch).await.unwrap();
    drop(handoff);
    tx.rollback().await.unwrap();
    assert_eq!(
        count_jobs(&f.queue).await,
        1,
        "a rolled-back batch leaves no job"
    );

    let mut tx = f.db.write_global().await.unwrap();
    let mut handoff = f.queue.handoff();
    let new = handoff.enqueue_all_in(&mut tx, &batch).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(handoff.handed(), 0, "no worker runs here to take them");
    assert_eq!(
        new, 3,
        "send:0 existed; send:1, send:2 and the keyless job are new"
    );
    assert_eq!(count_jobs(&f.queue).await, 4);
    handoff.start();

    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let worker = Worker::new(f.queue.clone(), fast()).register("send", KindOptions::default(), {
        let seen = seen.clone();
        move |job: Job| {
            seen.lock()
                .unwrap()
                .push(job.payload["n"].as_i64().unwrap());
            async { Outcome::Done }
        }
    });
    let (stop, stopped) = spawn(worker);
    for _ in 0..500 {
        if seen.lock().unwrap().len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(()).unwrap();
    stopped.await.unwrap();
    let mut seen = seen.lock().unwrap().clone();
    seen.sort_unstable();
    assert_eq!(seen, [0, 1, 2, 3], "every job ran once");
}

async fn a_stored_retry_delay_survives_a_restart(engine: Engine) {
    let f = fixture(engine).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let handler = {
        let runs = runs.clone();
        move |job: job_queue::Job| {
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                if job.attempt == 1 {
                    Outcome::retry_after(Duration::from_secs(3600), "the receiver said later")
                } else {
                    Outcome::Done
                }
            }
        }
    };
    let id = f.enqueue("call", json!({})).await;
    let before = f.clock.now_ms();
    let (stop, first) = spawn(Worker::new(f.queue.clone(), fast()).register(
        "call",
        one_at_a_time(),
        handler.clone(),
    ));
    for _ in 0..500 {
        if job(&f.queue, &id).await.1 == 1 && job(&f.queue, &id).await.0 == "available" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (state, attempt, run_at, error) = job(&f.queue, &id).await;
    assert_eq!((state.as_str(), attempt), ("available", 1));
    assert!(
        run_at >= before + 3_600_000,
        "the delay is stored in run_at"
    );
    assert_eq!(error.as_deref(), Some("the receiver said later"));
    stop.send(()).unwrap();
    first.await.unwrap();

    // A new worker (a restarted node) honours the stored delay...
    let (stop, second) =
        spawn(Worker::new(f.queue.clone(), fast()).register("call", one_at_a_time(), handler));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1, "not run before its time");
    // ...and runs the job once that time comes.
    f.clock.advance(Duration::from_secs(3601));
    wait_for_state(&f.queue, &id, "done").await;
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    stop.send(()).unwrap();
    second.await.unwrap();
}

async fn a_stale_lease_holders_outcome_is_rejected(engine: Engine) {
    let f = fixture(engine).await;
    let id = f.enqueue("slow", json!({})).await;
    let (a_started, a_release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let worker_a = Worker::new(f.queue.clone(), fast()).register("slow", one_at_a_time(), {
        let (started, release) = (a_started.clone(), a_release.clone());
        move |_job| {
            let (started, release) = (started.clone(), release.clone());
            async move {
                started.notify_one();
                release.notified().await;
                Outcome::Fail("the stale holder must not decide".to_owned())
            }
        }
    });
    let (stop_a, a) = spawn(worker_a);
    a_started.notified().await;

    // A stalls past its lease; the reaper hands the job to B.
    f.clock.advance(Duration::from_secs(61));
    let (b_started, b_release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let worker_b = Worker::new(f.queue.clone(), fast()).register("slow", one_at_a_time(), {
        let (started, release) = (b_started.clone(), b_release.clone());
        move |_job| {
            let (started, release) = (started.clone(), release.clone());
            async move {
                started.notify_one();
                release.notified().await;
                Outcome::Done
            }
        }
    });
    let (stop_b, b) = spawn(worker_b);
    b_started.notified().await;
    assert_eq!(job(&f.queue, &id).await.1, 2, "B runs the second attempt");

    // A finally answers: its outcome is fenced off, the job stays with B.
    a_release.notify_one();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(job(&f.queue, &id).await.0, "running");
    b_release.notify_one();
    wait_for_state(&f.queue, &id, "done").await;
    stop_a.send(()).unwrap();
    stop_b.send(()).unwrap();
    a.await.unwrap();
    b.await.unwrap();
}

async fn exhausted_jobs_die_with_their_error_and_can_be_replayed(engine: Engine) {
    let f = fixture(engine).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let worker = Worker::new(f.queue.clone(), fast()).register("flaky", one_at_a_time(), {
        let runs = runs.clone();
        move |_job| {
            let runs = runs.clone();
            async move {
                if runs.fetch_add(1, Ordering::SeqCst) < 2 {
                    Outcome::retry_after(Duration::ZERO, "connection refused")
                } else {
                    Outcome::Done
                }
            }
        }
    });
    let id = f
        .queue
        .enqueue(NewJob::new("flaky", json!({})).max_attempts(2))
        .await
        .unwrap()
        .id;
    let (stop, handle) = spawn(worker);
    wait_for_state(&f.queue, &id, "dead").await;
    let (_, attempt, _, error) = job(&f.queue, &id).await;
    assert_eq!((attempt, error.as_deref()), (2, Some("connection refused")));
    assert_eq!(f.queue.stats().await.unwrap().dead(), 1);

    assert!(f.queue.replay(&id).await.unwrap());
    wait_for_state(&f.queue, &id, "done").await;
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert!(!f.queue.replay(&id).await.unwrap(), "only dead jobs replay");
    stop.send(()).unwrap();
    handle.await.unwrap();
}

async fn a_panicking_handler_is_retried(engine: Engine) {
    let f = fixture(engine).await;
    let worker = Worker::new(f.queue.clone(), fast()).register(
        "fragile",
        KindOptions {
            concurrency: 1,
            schedule: job_queue::RetrySchedule::Fixed {
                delays: vec![Duration::ZERO],
                jitter_percent: 0,
            },
            ..KindOptions::default()
        },
        |job: job_queue::Job| async move {
            if job.attempt == 1 {
                panic!("bug in a handler");
            }
            Outcome::Done
        },
    );
    let id = f.enqueue("fragile", json!({})).await;
    let (stop, handle) = spawn(worker);
    wait_for_state(&f.queue, &id, "done").await;
    assert_eq!(job(&f.queue, &id).await.1, 2);
    stop.send(()).unwrap();
    handle.await.unwrap();
}

async fn each_periodic_window_runs_once_across_schedulers(engine: Engine) {
    let f = fixture(engine).await;
    let schedulers: Vec<Periodic> = (0..2)
        .map(|_| {
            Periodic::new(f.queue.clone())
                .every("0 */5 * * * *", NewJob::new("usage.report", json!({})))
                .unwrap()
        })
        .collect();
    let start = 1_800_000_000_000_i64; // a multiple of five minutes
    let mut fresh = 0;
    for window in 0..3 {
        let (since, now) = (start + window * 300_000 - 1, start + window * 300_000 + 10);
        for scheduler in &schedulers {
            fresh += scheduler.tick(since, now).await.unwrap();
        }
    }
    assert_eq!(fresh, 3, "two schedulers, three windows, three jobs");
    let keys: Vec<(String, i64)> =
        sqlx::query_as("SELECT dedupe_key, run_at FROM jobs ORDER BY run_at")
            .fetch_all(f.queue.pool())
            .await
            .unwrap();
    assert_eq!(
        keys,
        (0..3)
            .map(|w| (
                format!("usage.report:{}", start + w * 300_000),
                start + w * 300_000
            ))
            .collect::<Vec<_>>()
    );
    assert!(Periodic::new(f.queue.clone())
        .every("every tuesday", NewJob::new("x", json!({})))
        .is_err());
}

async fn shutdown_lets_running_jobs_finish_and_releases_the_rest(engine: Engine) {
    let f = fixture(engine).await;
    let started = Arc::new(Notify::new());
    let slow = |pause: Duration, started: Arc<Notify>| {
        move |_job| {
            let started = started.clone();
            async move {
                started.notify_one();
                tokio::time::sleep(pause).await;
                Outcome::Done
            }
        }
    };

    let id = f.enqueue("short", json!({})).await;
    let (stop, handle) = spawn(Worker::new(f.queue.clone(), fast()).register(
        "short",
        one_at_a_time(),
        slow(Duration::from_millis(300), started.clone()),
    ));
    started.notified().await;
    stop.send(()).unwrap();
    handle.await.unwrap();
    assert_eq!(
        job(&f.queue, &id).await.0,
        "done",
        "a running job finishes before the worker exits"
    );

    let id = f.enqueue("long", json!({})).await;
    let options = WorkerOptions {
        shutdown_timeout: Duration::from_millis(100),
        ..fast()
    };
    let (stop, handle) = spawn(Worker::new(f.queue.clone(), options).register(
        "long",
        one_at_a_time(),
        slow(Duration::from_secs(30), started.clone()),
    ));
    started.notified().await;
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .expect("the deadline holds")
        .unwrap();
    let (state, attempt, _, _) = job(&f.queue, &id).await;
    assert_eq!(
        (state.as_str(), attempt),
        ("available", 0),
        "released, its attempt not counted"
    );
}

async fn operators_see_counts_on_the_api_and_in_metrics(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let queue = srv.running.as_ref().unwrap().state.queue.clone();
    for _ in 0..3 {
        queue
            .enqueue(NewJob::new("nobody.handles.this", json!({})))
            .await
            .unwrap();
    }
    srv.clock.advance(Duration::from_secs(10));
    let (status, stats) = srv.get("/v1/queue", &srv.admin_key).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    // Found by name: a periodic job (the minute's approval run) may be listed too.
    let kind = stats["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == "nobody.handles.this")
        .unwrap_or_else(|| panic!("{stats}"));
    assert_eq!(
        (kind["kind"].as_str(), kind["available"].as_i64()),
        (Some("nobody.handles.this"), Some(3))
    );
    assert!(kind["oldest_available_age_ms"].as_i64().unwrap() >= 10_000);
    assert_eq!(stats["dead"], 0);

    let metrics = srv.metrics().await;
    assert!(
        metrics.contains(
            r#"switchyard_jobs{queue="default",kind="nobody.handles.this",state="available"} 3"#
        ),
        "{metrics}"
    );
    // The sample, not the `# HELP` line that names it too.
    let oldest: f64 = metrics
        .lines()
        .find(|l| l.starts_with("switchyard_jobs_oldest_due_age_seconds"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(oldest >= 10.0, "oldest due job {oldest} s");

    let missing = srv
        .post(
            "/v1/queue/jobs/job_01J00000000000000000000000/replay",
            &srv.admin_key,
            json!({}),
        )
        .await;
    common::assert_problem(&missing, StatusCode::NOT_FOUND, "not_found");
    srv.stop().await;
}

async fn an_idle_worker_wakes_for_a_committed_job_without_waiting_for_its_poll(engine: Engine) {
    let f = fixture(engine).await;
    let options = WorkerOptions {
        poll_interval: Duration::from_secs(30),
        maintenance_interval: Duration::from_secs(30),
        listen_url: (engine == Engine::Postgres).then(|| f._db.url.clone()),
        ..WorkerOptions::default()
    };
    let ran = Arc::new(Notify::new());
    let worker =
        Worker::new(f.queue.clone(), options).register("ping", one_at_a_time(), signals(&ran));
    let (stop, handle) = spawn(worker);
    tokio::time::sleep(Duration::from_millis(300)).await; // idle: its first poll found nothing

    // Enqueued in a caller's transaction: on PostgreSQL the commit itself notifies (any node);
    // on SQLite the committer wakes this process's workers.
    let mut tx = f.db.write_global().await.unwrap();
    f.queue
        .enqueue_in(&mut tx, NewJob::new("ping", json!({})))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    if engine == Engine::Sqlite {
        f.queue.committed();
    }
    tokio::time::timeout(Duration::from_secs(2), ran.notified())
        .await
        .expect("picked up long before the 30 s poll");
    stop.send(()).unwrap();
    handle.await.unwrap();
}

async fn a_long_handler_keeps_its_lease(engine: Engine) {
    let f = fixture(engine).await;
    let kind = KindOptions {
        concurrency: 1,
        lease: Duration::from_millis(300),
        ..KindOptions::default()
    };
    let worker = Worker::new(f.queue.clone(), fast()).register("long", kind, |_job| async {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        Outcome::Done
    });
    let id = f.enqueue("long", json!({})).await;
    let (stop, handle) = spawn(worker);
    wait_for_state(&f.queue, &id, "done").await;
    let (_, attempt, _, error) = job(&f.queue, &id).await;
    assert_eq!(
        (attempt, error),
        (1, None),
        "four lease lengths long, never reaped"
    );
    stop.send(()).unwrap();
    handle.await.unwrap();
}

async fn done_jobs_are_purged_after_the_retention_and_dead_ones_kept(engine: Engine) {
    let f = fixture(engine).await;
    let worker = Worker::new(f.queue.clone(), fast()).register(
        "once",
        one_at_a_time(),
        |job: job_queue::Job| async move {
            if job.payload["fail"] == true {
                Outcome::Fail("bad input".to_owned())
            } else {
                Outcome::Done
            }
        },
    );
    let done = f.enqueue("once", json!({})).await;
    let dead = f.enqueue("once", json!({"fail": true})).await;
    let (stop, handle) = spawn(worker);
    wait_for_state(&f.queue, &done, "done").await;
    wait_for_state(&f.queue, &dead, "dead").await;
    stop.send(()).unwrap();
    handle.await.unwrap();

    let retention = Duration::from_secs(3600);
    assert_eq!(
        f.queue.purge(retention).await.unwrap(),
        0,
        "younger than the retention"
    );
    f.clock.advance(Duration::from_secs(7200));
    assert_eq!(f.queue.purge(retention).await.unwrap(), 1);
    assert_eq!(count_jobs(&f.queue).await, 1);
    assert_eq!(job(&f.queue, &dead).await.3.as_deref(), Some("bad input"));
}

async fn a_snoozed_job_waits_without_using_an_attempt(engine: Engine) {
    let f = fixture(engine).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let worker = Worker::new(f.queue.clone(), fast()).register("patient", one_at_a_time(), {
        let runs = runs.clone();
        move |_job| {
            let runs = runs.clone();
            async move {
                if runs.fetch_add(1, Ordering::SeqCst) < 3 {
                    Outcome::Snooze(Duration::from_secs(60))
                } else {
                    Outcome::Done
                }
            }
        }
    });
    let job_id = f
        .queue
        .enqueue(NewJob::new("patient", json!({})).max_attempts(1))
        .await
        .unwrap()
        .id;
    let (stop, handle) = spawn(worker);
    for snoozes in 1..=3 {
        while runs.load(Ordering::SeqCst) < snoozes {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        wait_for_state(&f.queue, &job_id, "available").await;
        assert_eq!(
            job(&f.queue, &job_id).await.1,
            0,
            "no attempt used, though only one is allowed"
        );
        f.clock.advance(Duration::from_secs(61));
    }
    wait_for_state(&f.queue, &job_id, "done").await;
    stop.send(()).unwrap();
    handle.await.unwrap();
}

/// Options under which a worker finds nothing by itself for 30 s: no poll, no listener.
fn idle() -> WorkerOptions {
    WorkerOptions {
        poll_interval: Duration::from_secs(30),
        maintenance_interval: Duration::from_secs(30),
        ..WorkerOptions::default()
    }
}

/// (state, attempt) of every job of `kind`, by state (`running`, `done`, `available`).
async fn jobs_of(queue: &Queue, kind: &str) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT state, attempt FROM jobs WHERE kind = $1 ORDER BY state DESC, attempt DESC",
    )
    .bind(kind)
    .fetch_all(queue.pool())
    .await
    .unwrap()
}

async fn wait_for_jobs(queue: &Queue, kind: &str, expected: &[(&str, i64)]) {
    let expected: Vec<(String, i64)> = expected
        .iter()
        .map(|(state, attempt)| (state.to_string(), *attempt))
        .collect();
    for _ in 0..300 {
        if jobs_of(queue, kind).await == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(jobs_of(queue, kind).await, expected);
}

async fn jobs_handed_over_at_enqueue_run_at_commit_without_a_claim(engine: Engine) {
    let f = fixture(engine).await;
    // Each run's in-memory context, if it got one.
    let ran: Arc<Mutex<Vec<Option<u64>>>> = Arc::default();
    let worker = Worker::new(f.queue.clone(), idle()).register("ping", two_at_a_time(), {
        let ran = ran.clone();
        move |job: Job| {
            ran.lock().unwrap().push(job.local::<u64>().copied());
            async { Outcome::Done }
        }
    });
    let (stop, handle) = spawn(worker);
    tokio::time::sleep(Duration::from_millis(300)).await; // idle: its first turn found nothing

    let batch: Vec<NewJob> = (0..3)
        .map(|n: u64| NewJob::new("ping", json!({ "n": n })).local(n))
        .collect();
    let mut tx = f.db.write_global().await.unwrap();
    let mut handoff = f.queue.handoff();
    handoff.enqueue_all_in(&mut tx, &batch).await.unwrap();
    assert_eq!(handoff.handed(), 2, "one per free slot");
    tx.commit().await.unwrap();
    assert_eq!(
        jobs_of(&f.queue, "ping").await,
        [
            ("running".into(), 1),
            ("running".into(), 1),
            ("available".into(), 0)
        ],
        "handed jobs are leased by their insert"
    );
    assert!(
        ran.lock().unwrap().is_empty(),
        "nothing runs before the start"
    );

    // The handed two run from memory; the third is claimed once a slot frees (the start woke
    // the worker for it). The worker would not look by itself for 30 s.
    handoff.start();
    wait_for_jobs(&f.queue, "ping", &[("done", 1), ("done", 1), ("done", 1)]).await;
    let mut contexts = ran.lock().unwrap().clone();
    contexts.sort();
    assert_eq!(
        contexts,
        [None, Some(0), Some(1)],
        "handed runs carry their enqueuer's context; the claimed one reads only its payload"
    );
    stop.send(()).unwrap();
    handle.await.unwrap();
}

async fn a_handoff_that_is_not_started_gives_its_jobs_back(engine: Engine) {
    let f = fixture(engine).await;
    let ran = Arc::new(AtomicUsize::new(0));
    let worker = Worker::new(f.queue.clone(), idle()).register("ping", one_at_a_time(), {
        let ran = ran.clone();
        move |_job| {
            ran.fetch_add(1, Ordering::SeqCst);
            async { Outcome::Done }
        }
    });
    let (stop, handle) = spawn(worker);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ping = || NewJob::new("ping", json!({}));

    // Rolled back: nothing stays, and the slot is free again.
    let mut tx = f.db.write_global().await.unwrap();
    let mut handoff = f.queue.handoff();
    handoff.enqueue_in(&mut tx, ping()).await.unwrap();
    assert_eq!(handoff.handed(), 1);
    tx.rollback().await.unwrap();
    drop(handoff);
    assert!(jobs_of(&f.queue, "ping").await.is_empty());

    // Committed but dropped unstarted: the job is available again, its attempt not counted.
    let mut tx = f.db.write_global().await.unwrap();
    let mut handoff = f.queue.handoff();
    handoff.enqueue_in(&mut tx, ping()).await.unwrap();
    assert_eq!(
        handoff.handed(),
        1,
        "the rolled-back handoff freed its slot"
    );
    tx.commit().await.unwrap();
    drop(handoff);
    wait_for_jobs(&f.queue, "ping", &[("available", 0)]).await;
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    f.queue.committed();
    wait_for_jobs(&f.queue, "ping", &[("done", 1)]).await;

    // Handed to a worker that stops before the start: given back, to run elsewhere.
    let mut tx = f.db.write_global().await.unwrap();
    let mut handoff = f.queue.handoff();
    handoff.enqueue_in(&mut tx, ping()).await.unwrap();
    assert_eq!(handoff.handed(), 1);
    tx.commit().await.unwrap();
    stop.send(()).unwrap();
    handle.await.unwrap();
    handoff.start();
    wait_for_jobs(&f.queue, "ping", &[("done", 1), ("available", 0)]).await;
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}

async fn a_job_falling_due_runs_on_time_while_handed_jobs_keep_the_worker_busy(engine: Engine) {
    let f = fixture(engine).await;
    let options = WorkerOptions {
        poll_interval: Duration::from_millis(50),
        ..idle()
    };
    let later_ran = Arc::new(Notify::new());
    let worker = Worker::new(f.queue.clone(), options)
        .register("ping", KindOptions::default(), |_job| async {
            Outcome::Done
        })
        .register("later", one_at_a_time(), signals(&later_ran));
    let (stop, handle) = spawn(worker);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let due = f.clock.now_ms() + 200;
    f.queue
        .enqueue(NewJob::new("later", json!({})).run_at(due))
        .await
        .unwrap();

    // A handed job every 10 ms keeps the worker's loop busy, and none of them wakes it to claim.
    let busy = async {
        loop {
            f.enqueue_handed(NewJob::new("ping", json!({}))).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::select! {
        _ = busy => unreachable!(),
        _ = later_ran.notified() => {}
        _ = tokio::time::sleep(Duration::from_secs(3)) => panic!("the due job waited for the worker to go idle"),
    }
    assert!(f.clock.now_ms() >= due);
    stop.send(()).unwrap();
    handle.await.unwrap();
}

async fn a_worker_looking_for_due_jobs_does_not_turn_away_handed_ones(engine: Engine) {
    let f = fixture(engine).await;
    // The worker looks for due jobs every millisecond, so a look is under way at almost any
    // moment; none of them finds a job (each job is handed over by its insert).
    let options = WorkerOptions {
        poll_interval: Duration::from_millis(1),
        ..idle()
    };
    let ran = Arc::new(Notify::new());
    let worker =
        Worker::new(f.queue.clone(), options).register("ping", two_at_a_time(), signals(&ran));
    let (stop, handle) = spawn(worker);
    tokio::time::sleep(Duration::from_millis(100)).await;

    // One job at a time, each after the one before has run: a slot is always free for it.
    let mut turned_away = 0;
    for _ in 0..100 {
        turned_away += 1 - f.enqueue_handed(NewJob::new("ping", json!({}))).await;
        tokio::time::timeout(Duration::from_secs(5), ran.notified())
            .await
            .expect("every job runs");
    }
    assert_eq!(
        turned_away, 0,
        "a job enqueued while a slot is free is handed over, whatever the worker is doing"
    );
    stop.send(()).unwrap();
    handle.await.unwrap();
}

async fn a_restarted_node_takes_back_its_own_leases_at_once_and_no_one_elses(engine: Engine) {
    let f = fixture(engine).await;
    let node_a = f.queue.clone().with_node("host-a:8080");
    let node_b = f.queue.clone().with_node("host-b:8080");
    let mine = f.enqueue("stuck", json!({})).await;
    let stalling = |started: Arc<Notify>| {
        move |_job: Job| {
            let started = started.clone();
            async move {
                started.notify_one();
                std::future::pending::<()>().await;
                Outcome::Done
            }
        }
    };
    // Node A takes the job and dies holding it (its task is gone, its lease stays for 60 s).
    let started = Arc::new(Notify::new());
    let worker = Worker::new(node_a.clone(), fast()).register(
        "stuck",
        one_at_a_time(),
        stalling(started.clone()),
    );
    let (_stop_a, a) = spawn(worker);
    started.notified().await;
    a.abort();
    let _ = a.await;
    // Node B, alive, holds a job of its own.
    let theirs = f.enqueue("theirs", json!({})).await;
    let started = Arc::new(Notify::new());
    let worker =
        Worker::new(node_b, fast()).register("theirs", one_at_a_time(), stalling(started.clone()));
    let (stop_b, b) = spawn(worker);
    started.notified().await;
    assert_eq!(job(&f.queue, &mine).await.0, "running");

    // Node A starts again: its job runs again at once, long before the lease would expire;
    // node B's stays with B.
    let ran = Arc::new(Notify::new());
    let worker = Worker::new(node_a, fast()).register("stuck", one_at_a_time(), {
        let ran = ran.clone();
        move |_job| {
            let ran = ran.clone();
            async move {
                ran.notify_one();
                Outcome::Done
            }
        }
    });
    let (stop_a, a) = spawn(worker);
    tokio::time::timeout(Duration::from_secs(5), ran.notified())
        .await
        .expect("the restarted node ran its job again without waiting for the lease");
    let (state, attempt, _, _) = job(&f.queue, &mine).await;
    assert_eq!(attempt, 2);
    for _ in 0..100 {
        if job(&f.queue, &mine).await.0 == "done" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(["running", "done"].contains(&state.as_str()));
    assert_eq!(job(&f.queue, &mine).await.0, "done");
    assert_eq!(
        job(&f.queue, &theirs).await.0,
        "running",
        "another node's lease is not touched"
    );
    let _ = stop_a.send(());
    a.await.unwrap();
    b.abort();
    drop(stop_b);
}
