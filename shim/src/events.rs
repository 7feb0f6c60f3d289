//! Task events to containerd, published in order from one thread (an OOM
//! event must reach containerd before the exit it caused).

use std::sync::mpsc::{channel, Sender};

use containerd_shim::publisher::RemotePublisher;
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::MessageDyn;
use containerd_shim_protos::topics;

/// A task event.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A container was created.
    Create {
        /// The container.
        container_id: String,
        /// Its bundle.
        bundle: String,
        /// Its stdio.
        io: (String, String, String, bool),
        /// The task pid.
        pid: u32,
    },
    /// A container's init started.
    Start {
        /// The container.
        container_id: String,
        /// The task pid.
        pid: u32,
    },
    /// An exec process was added.
    ExecAdded {
        /// The container.
        container_id: String,
        /// The exec id.
        exec_id: String,
    },
    /// An exec process started.
    ExecStarted {
        /// The container.
        container_id: String,
        /// The exec id.
        exec_id: String,
        /// The task pid.
        pid: u32,
    },
    /// A process ended.
    Exit {
        /// The container.
        container_id: String,
        /// The process id (the container id for its init).
        id: String,
        /// The task pid.
        pid: u32,
        /// Its exit status.
        status: u32,
        /// When.
        at: Timestamp,
    },
    /// A container was deleted.
    Delete {
        /// The container.
        container_id: String,
        /// The task pid.
        pid: u32,
        /// Its init's exit status.
        status: u32,
        /// When it exited.
        at: Timestamp,
    },
    /// The kernel OOM-killed a process of the container.
    Oom {
        /// The container.
        container_id: String,
    },
    /// A container was frozen.
    Paused {
        /// The container.
        container_id: String,
    },
    /// A container was thawed.
    Resumed {
        /// The container.
        container_id: String,
    },
}

impl Event {
    /// The topic and message containerd expects.
    fn into_message(self) -> (&'static str, Box<dyn MessageDyn>) {
        match self {
            Event::Create {
                container_id,
                bundle,
                io,
                pid,
            } => {
                let (stdin, stdout, stderr, terminal) = io;
                let io = TaskIO {
                    stdin,
                    stdout,
                    stderr,
                    terminal,
                    ..Default::default()
                };
                let m = TaskCreate {
                    container_id,
                    bundle,
                    io: Some(io).into(),
                    pid,
                    ..Default::default()
                };
                (topics::TASK_CREATE_EVENT_TOPIC, Box::new(m))
            }
            Event::Start { container_id, pid } => (
                topics::TASK_START_EVENT_TOPIC,
                Box::new(TaskStart {
                    container_id,
                    pid,
                    ..Default::default()
                }),
            ),
            Event::ExecAdded {
                container_id,
                exec_id,
            } => (
                topics::TASK_EXEC_ADDED_EVENT_TOPIC,
                Box::new(TaskExecAdded {
                    container_id,
                    exec_id,
                    ..Default::default()
                }),
            ),
            Event::ExecStarted {
                container_id,
                exec_id,
                pid,
            } => (
                topics::TASK_EXEC_STARTED_EVENT_TOPIC,
                Box::new(TaskExecStarted {
                    container_id,
                    exec_id,
                    pid,
                    ..Default::default()
                }),
            ),
            Event::Exit {
                container_id,
                id,
                pid,
                status,
                at,
            } => (
                topics::TASK_EXIT_EVENT_TOPIC,
                Box::new(TaskExit {
                    container_id,
                    id,
                    pid,
                    exit_status: status,
                    exited_at: Some(at).into(),
                    ..Default::default()
                }),
            ),
            Event::Delete {
                container_id,
                pid,
                status,
                at,
            } => (
                topics::TASK_DELETE_EVENT_TOPIC,
                Box::new(TaskDelete {
                    id: container_id.clone(),
                    container_id,
                    pid,
                    exit_status: status,
                    exited_at: Some(at).into(),
                    ..Default::default()
                }),
            ),
            Event::Oom { container_id } => (
                topics::TASK_OOM_EVENT_TOPIC,
                Box::new(TaskOOM {
                    container_id,
                    ..Default::default()
                }),
            ),
            Event::Paused { container_id } => (
                topics::TASK_PAUSED_EVENT_TOPIC,
                Box::new(TaskPaused {
                    container_id,
                    ..Default::default()
                }),
            ),
            Event::Resumed { container_id } => (
                topics::TASK_RESUMED_EVENT_TOPIC,
                Box::new(TaskResumed {
                    container_id,
                    ..Default::default()
                }),
            ),
        }
    }
}

/// Where the pod's events go: a queue drained by one publishing thread.
#[derive(Clone, Debug)]
pub struct Events {
    queue: Sender<Event>,
}

impl Events {
    /// Starts the publishing thread for `namespace`.
    pub fn start(publisher: RemotePublisher, namespace: String) -> Self {
        let (queue, events) = channel::<Event>();
        std::thread::Builder::new()
            .name("events".into())
            .spawn(move || {
                for event in events {
                    let (topic, message) = event.into_message();
                    let ctx = ttrpc::context::with_timeout(5_000_000_000);
                    if let Err(e) = publisher.publish(ctx, topic, &namespace, message) {
                        log::warn!("cannot publish {topic}: {e}");
                    }
                }
            })
            .expect("the events thread starts");
        Self { queue }
    }

    /// A queue whose events are handed to `sink` (tests).
    #[cfg(test)]
    pub fn to_channel(sink: Sender<Event>) -> Self {
        Self { queue: sink }
    }

    /// Queues `event`.
    pub fn publish(&self, event: Event) {
        let _ = self.queue.send(event);
    }
}

/// Now, as a protobuf timestamp.
pub fn now() -> Timestamp {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_containerd_topics() {
        let (topic, _) = Event::Oom {
            container_id: "c".into(),
        }
        .into_message();
        assert_eq!(topic, "/tasks/oom");
        let (topic, m) = Event::Exit {
            container_id: "c".into(),
            id: "e1".into(),
            pid: 7,
            status: 137,
            at: now(),
        }
        .into_message();
        assert_eq!(topic, "/tasks/exit");
        assert_eq!(m.descriptor_dyn().full_name(), "containerd.events.TaskExit");
    }
}
