//! A worker killed with SIGKILL in the middle of jobs loses none of them.
//!
//! The test process re-runs its own binary as the child worker (the ignored helper below), kills
//! it once jobs are in flight, and lets a second worker finish. Every run is logged in a side
//! table, so the test shows which jobs ran twice: exactly those the killed worker had not
//! finished, and never one it had.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Engine, TestDb};
use job_queue::{KindOptions, NewJob, Outcome, Queue, Worker, WorkerOptions};
use serde_json::json;
use switchyard::clock::Clock;
use switchyard::db::Db;

const JOBS: usize = 60;
const LEASE: Duration = Duration::from_secs(1);

on_both_engines!(a_killed_worker_loses_no_job);

async fn open(url: &str) -> (Db, Queue) {
    let db = Db::connect(url, 10).await.unwrap();
    let clock = Clock::default();
    let queue = Queue::new(
        db.writer().clone(),
        db.dialect().queue_engine(),
        Arc::new(move || clock.now_ms()),
    );
    (db, queue)
}

/// A worker whose handler logs each run's start and finish around a short pause.
fn logging_worker(db: &Db, queue: &Queue, runner: &'static str) -> Worker {
    let pool = db.pool().clone();
    let options = WorkerOptions {
        poll_interval: Duration::from_millis(10),
        maintenance_interval: Duration::from_millis(100),
        ..WorkerOptions::default()
    };
    let kind = KindOptions {
        concurrency: 8,
        lease: LEASE,
        ..KindOptions::default()
    };
    Worker::new(queue.clone(), options).register("work", kind, move |job: job_queue::Job| {
        let pool = pool.clone();
        async move {
            let started = now_ms();
            let logged = sqlx::query("INSERT INTO job_runs (job_id, runner, started_at) VALUES ($1, $2, $3)")
                .bind(&job.id)
                .bind(runner)
                .bind(started)
                .execute(&pool)
                .await;
            if let Err(err) = logged {
                return Outcome::retry(err.to_string());
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            let finished = sqlx::query("UPDATE job_runs SET finished_at = $1 WHERE job_id = $2 AND runner = $3 AND started_at = $4")
                .bind(now_ms())
                .bind(&job.id)
                .bind(runner)
                .bind(started)
                .execute(&pool)
                .await;
            match finished {
                Ok(_) => Outcome::Done,
                Err(err) => Outcome::retry(err.to_string()),
            }
        }
    })
}

fn now_ms() -> i64 {
    Clock::default().now_ms()
}

/// The child worker; started by `a_killed_worker_loses_no_job`, never on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the crash test's child process: it runs only when that test starts it"]
async fn crash_child_worker() {
    let url = std::env::var("CRASH_TEST_DATABASE_URL").expect("started by the crash test");
    let (db, queue) = open(&url).await;
    logging_worker(&db, &queue, "child")
        .run(std::future::pending())
        .await
        .unwrap();
}

async fn count(db: &Db, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(db.pool()).await.unwrap();
    n
}

async fn a_killed_worker_loses_no_job(engine: Engine) {
    let test_db = TestDb::create(engine).await;
    let (db, queue) = open(&test_db.url).await;
    db.migrate().await.unwrap();
    sqlx::query("CREATE TABLE job_runs (job_id TEXT NOT NULL, runner TEXT NOT NULL, started_at BIGINT NOT NULL, finished_at BIGINT)")
        .execute(db.pool())
        .await
        .unwrap();
    for n in 0..JOBS {
        queue
            .enqueue(NewJob::new("work", json!({ "n": n })))
            .await
            .unwrap();
    }

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child_worker", "--exact", "--ignored", "--nocapture"])
        .env("CRASH_TEST_DATABASE_URL", &test_db.url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Kill once ten runs have finished and some began within the last 100 ms: runs take 300 ms,
    // so the kill lands inside them however slow this machine is to send it.
    while count(
        &db,
        "SELECT COUNT(*) FROM job_runs WHERE finished_at IS NOT NULL",
    )
    .await
        < 10
        || count(
            &db,
            &format!(
                "SELECT COUNT(*) FROM job_runs WHERE finished_at IS NULL AND started_at > {}",
                now_ms() - 100
            ),
        )
        .await
            == 0
    {
        assert!(
            Instant::now() < deadline,
            "the child worker never got going"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let killed = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    child.wait().unwrap();
    let killed_at = now_ms();
    let unfinished = count(
        &db,
        "SELECT COUNT(*) FROM job_runs WHERE finished_at IS NULL",
    )
    .await;
    let done_before_kill: Vec<(String,)> =
        sqlx::query_as("SELECT id FROM jobs WHERE state = 'done'")
            .fetch_all(db.pool())
            .await
            .unwrap();
    assert!(unfinished > 0, "the kill landed while jobs were running");

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let survivor = tokio::spawn(logging_worker(&db, &queue, "survivor").run(async {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&db, "SELECT COUNT(*) FROM jobs WHERE state = 'done'").await < JOBS as i64 {
        assert!(
            Instant::now() < deadline,
            "the survivor did not finish every job"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(()).unwrap();
    survivor.await.unwrap().unwrap();

    let runs: Vec<(String, String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT job_id, runner, started_at, finished_at FROM job_runs ORDER BY job_id, started_at",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    let mut by_job: std::collections::BTreeMap<&str, Vec<_>> = Default::default();
    for (job, runner, started, finished) in &runs {
        by_job
            .entry(job.as_str())
            .or_default()
            .push((runner.as_str(), *started, *finished));
    }
    assert_eq!(by_job.len(), JOBS, "every job ran");
    let mut ran_twice = Vec::new();
    for (job, runs) in &by_job {
        let (last, earlier) = runs.split_last().unwrap();
        assert!(last.2.is_some(), "{job}: its last run finished");
        if earlier.is_empty() {
            continue;
        }
        // At-least-once: a job the child had not recorded as done runs again, after the kill;
        // a job recorded done never does.
        assert!(
            !done_before_kill.iter().any(|(id,)| id == job),
            "{job} was done, yet ran again"
        );
        assert_eq!(earlier.len(), 1, "{job}: one repeat at most");
        assert_eq!(
            earlier[0].0, "child",
            "{job}: only the killed worker's run is repeated"
        );
        assert!(
            last.1 >= killed_at,
            "{job}: the repeat started after the first runner died"
        );
        ran_twice.push(*job);
    }
    assert!(
        ran_twice.len() as i64 >= unfinished,
        "every run the kill cut short was repeated"
    );
    println!(
        "{} of {JOBS} jobs ran twice (cut short by SIGKILL): {ran_twice:?}",
        ran_twice.len()
    );
}
