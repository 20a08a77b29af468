//! Who may use the edge: the users file and its management. The login page,
//! sessions and the gate in front of `/api/`, Studio and realtime build on it.

pub mod users;
