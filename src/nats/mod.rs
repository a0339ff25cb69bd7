//! NATS itself: the connection (with reconnection and credentials applied) and the JetStream
//! objects a queue lives in.

pub mod connection;
pub mod credentials;
pub mod files;
pub mod topology;
