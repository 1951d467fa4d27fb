//! How the disk store's answers reach the tasks that wait for them. The
//! thread that answers a group's steps (after its fsync) sends each tokio
//! runtime the steps came from one message with its share, and a task of
//! that runtime gives them: a runtime woken from another thread costs an
//! eventfd write and often a context switch, and once per group is enough.
//! Inboxes are keyed by the runtime's id, not the thread, since a thread
//! may run more than one runtime.

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::sync::lock;

/// What to do with a step's answer once its commit is durable, or is not.
pub(super) type Done = Box<dyn FnOnce(Committed) + Send>;
pub(super) type Committed = Result<(), Arc<fjall::Error>>;

/// Where the answers to a runtime's steps go: a task on that runtime gives
/// them, so the thread that answers wakes the runtime once per group rather
/// than once per step (an eventfd write each, some 2.5 a job). `None` for a
/// step from outside any runtime: its answer is given where it is made.
pub(super) type Inbox = Option<UnboundedSender<Answers>>;

/// The answers to one runtime's steps in a group, and how the group ended.
pub(super) struct Answers {
    done: Vec<Done>,
    committed: Committed,
}

impl Answers {
    fn give(self) {
        for done in self.done {
            done(self.committed.clone());
        }
    }
}

/// Gives the answers sent to one runtime's inbox, on that runtime.
async fn receive(mut inbox: UnboundedReceiver<Answers>) {
    while let Some(answers) = inbox.recv().await {
        answers.give();
    }
}

/// Sends each inbox its share of `done`, in one message; gives those whose
/// runtime is gone (its inbox closed) here.
pub(super) fn answer(done: impl IntoIterator<Item = (Inbox, Done)>, committed: &Committed) {
    let mut shares: Vec<(Inbox, Vec<Done>)> = Vec::new();
    for (inbox, done) in done {
        let same = |(other, _): &&mut (Inbox, Vec<Done>)| match (other, &inbox) {
            (Some(a), Some(b)) => a.same_channel(b),
            (None, None) => true,
            _ => false,
        };
        match shares.iter_mut().find(same) {
            Some((_, share)) => share.push(done),
            None => shares.push((inbox, vec![done])),
        }
    }
    for (inbox, done) in shares {
        let answers = Answers {
            done,
            committed: committed.clone(),
        };
        match inbox {
            Some(inbox) => {
                if let Err(unsent) = inbox.send(answers) {
                    unsent.0.give();
                }
            }
            None => answers.give(),
        }
    }
}

/// An inbox per runtime that has written, by the runtime's id.
#[derive(Default)]
pub(super) struct Inboxes(Mutex<Vec<(tokio::runtime::Id, UnboundedSender<Answers>)>>);

impl Inboxes {
    /// The inbox of the runtime this is called on, made (and its task
    /// started) the first time that runtime writes; those of runtimes gone
    /// are dropped.
    pub(super) fn current(&self) -> Inbox {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let id = runtime.id();
        let mut inboxes = lock(&self.0);
        if let Some((_, inbox)) = inboxes.iter().find(|(of, _)| *of == id) {
            return Some(inbox.clone());
        }
        inboxes.retain(|(_, inbox)| !inbox.is_closed());
        let (inbox, answers) = unbounded_channel();
        runtime.spawn(receive(answers));
        inboxes.push((id, inbox.clone()));
        Some(inbox)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counted(given: &Arc<AtomicUsize>) -> Done {
        let given = Arc::clone(given);
        Box::new(move |committed| {
            assert!(committed.is_ok());
            given.fetch_add(1, Ordering::Relaxed);
        })
    }

    /// An answer is never lost: one whose runtime is gone, or that came
    /// from outside any runtime, is given where it is made.
    #[test]
    fn answers_whose_runtime_is_gone_are_given_here() {
        let given = Arc::new(AtomicUsize::new(0));
        let (gone, receiver) = unbounded_channel();
        drop(receiver);
        let (open, mut waiting) = unbounded_channel();
        let done = [
            (Some(gone.clone()), counted(&given)),
            (None, counted(&given)),
            (Some(open.clone()), counted(&given)),
            (Some(gone), counted(&given)),
            (Some(open), counted(&given)),
        ];
        answer(done, &Ok(()));
        assert_eq!(given.load(Ordering::Relaxed), 3);
        let share = waiting.try_recv().expect("one message for the open inbox");
        assert!(waiting.try_recv().is_err(), "its share came in one message");
        share.give();
        assert_eq!(given.load(Ordering::Relaxed), 5);
    }
}
