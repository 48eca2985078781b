//! Identifiers. Each is a distinct newtype over a string so that an agent id can never be passed
//! where a task id is expected. They serialize as plain strings.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Self {
                Self(s.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }
    };
}

string_id!(
    /// An agent's id, assigned by the master at first registration and kept by the agent on disk.
    AgentId
);
string_id!(
    /// A framework's id, assigned by the master at first subscription.
    FrameworkId
);
string_id!(
    /// A task's id, chosen by its framework; unique within the framework.
    TaskId
);
string_id!(
    /// An offer's id, assigned by the master.
    OfferId
);
string_id!(
    /// An executor's id, chosen by the framework (custom executors) or derived from the task id
    /// (the built-in command executor).
    ExecutorId
);
string_id!(
    /// The uuid of one status update, used to acknowledge it.
    StatusUuid
);
