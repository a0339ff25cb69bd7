//! Operations on a queue as a whole, shared by the library, the command line and the dashboard:
//! statistics and dead letters.

pub mod dead_letters;
pub mod stats;
