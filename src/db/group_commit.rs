//! Group commit: many callers hand rows to one task, which handles every row waiting (up to a
//! batch size) in one transaction and then tells each caller its row's result.
//!
//! While one batch runs the next one gathers, so the cost of a transaction is shared by every
//! row that arrived meanwhile, and a caller still learns of its own row's fate before it goes
//! on (a delivery's job is marked done only once its attempt is recorded). Reads batch the same
//! way: each caller then gets its own row's answer.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

/// A handle on a group-commit task; cheap to clone. `R` is what each caller learns: by
/// default whether the transaction holding its row committed.
pub struct GroupCommit<T, R = bool> {
    sender: mpsc::Sender<(T, oneshot::Sender<R>)>,
}

impl<T, R> Clone for GroupCommit<T, R> {
    fn clone(&self) -> Self {
        Self {
            sender: self.sender.clone(),
        }
    }
}

impl<T: Send + 'static, R: Send + 'static> GroupCommit<T, R> {
    /// Starts the task. `handle` takes one batch (at most `max_batch` rows) in one transaction
    /// and returns each row's result, in the rows' order; it logs its own errors.
    pub fn start<F, Fut>(max_batch: usize, handle: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<R>> + Send,
    {
        let (sender, mut waiting) = mpsc::channel::<(T, oneshot::Sender<R>)>(4 * max_batch);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(max_batch);
            while waiting.recv_many(&mut batch, max_batch).await > 0 {
                let (rows, callers): (Vec<T>, Vec<_>) = batch.drain(..).unzip();
                for (caller, result) in callers.into_iter().zip(handle(rows).await) {
                    let _ = caller.send(result);
                }
            }
        });
        Self { sender }
    }

    /// Hands `row` to the task; its result, or `None` when the task is gone or gave none.
    pub async fn submit(&self, row: T) -> Option<R> {
        let (result, outcome) = oneshot::channel();
        self.sender.send((row, result)).await.ok()?;
        outcome.await.ok()
    }
}
