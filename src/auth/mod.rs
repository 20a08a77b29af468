//! Who may use the edge: the users file and its management, and the policies
//! the login and the session gate are built from (return paths, CSRF). The
//! login page, sessions and the gate itself are issue 4's next steps.

pub mod csrf;
pub mod gate;
pub mod page;
pub mod redirect;
pub mod service;
pub mod sessions;
pub mod throttle;
pub mod users;
