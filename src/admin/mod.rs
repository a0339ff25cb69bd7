//! Operations on a queue as a whole, shared by the library, the command line and the dashboard:
//! statistics, dead letters (reading, requeueing, removing), pause/resume and purge.

pub mod control;
pub mod dead_letters;
pub mod queues;
pub mod redrive;
pub mod schedules;
pub mod stats;
