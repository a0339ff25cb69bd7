//! Operations on a queue as a whole, shared by the library, the command line and the dashboard:
//! statistics, pause/resume and purge, recurring schedules, the queues on a server, deleting a
//! queue. Reading,
//! requeueing and removing dead letters is in [`crate::dead_letters`].

pub mod control;
pub mod destroy;
pub mod queues;
pub mod schedules;
pub mod stats;
