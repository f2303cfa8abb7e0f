//! Failure classes: one table for every surface (WIT, CLI exit codes, later
//! NATS service-error codes and HTTP statuses), and the retry rule they carry.

use std::fmt;

/// Why a delivery failed. The class decides whether a dispatch is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureClass {
    /// The handler found the payload malformed. Never retried.
    Invalid,
    /// The handler knows the caller but refuses; or the host refused (call depth). Never retried.
    Denied,
    /// The handler does not know the caller. Never retried.
    Unauthorized,
    /// No handler serves the name.
    NotFound,
    /// The handler reported a transient problem.
    Retry,
    /// The handler's concurrency limit and queue are full.
    Overloaded,
    /// The deadline passed and the guest was interrupted.
    Timeout,
    /// The handler failed for any other reason.
    Failed,
    /// The guest trapped, panicked or exhausted its memory.
    Trapped,
}

impl FailureClass {
    /// Every class, in the order of the design table.
    pub const ALL: [FailureClass; 9] = [
        Self::Invalid,
        Self::Unauthorized,
        Self::Denied,
        Self::NotFound,
        Self::Retry,
        Self::Overloaded,
        Self::Timeout,
        Self::Failed,
        Self::Trapped,
    ];

    /// Whether a dispatch failing with this class is tried again.
    pub fn retryable(self) -> bool {
        !matches!(self, Self::Invalid | Self::Denied | Self::Unauthorized)
    }

    /// The status code shared by the NATS error header and HTTP.
    pub fn code(self) -> u16 {
        match self {
            Self::Invalid => 400,
            Self::Unauthorized => 401,
            Self::Denied => 403,
            Self::NotFound => 404,
            Self::Retry | Self::Overloaded => 503,
            Self::Timeout => 504,
            Self::Failed | Self::Trapped => 500,
        }
    }

    /// The process exit code the CLI uses for this class (10–18; 1 is a host
    /// error such as a bad config, 2 a usage error).
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Invalid => 10,
            Self::Unauthorized => 11,
            Self::Denied => 12,
            Self::NotFound => 13,
            Self::Retry => 14,
            Self::Overloaded => 15,
            Self::Timeout => 16,
            Self::Failed => 17,
            Self::Trapped => 18,
        }
    }

    /// The kebab-case name used in logs, JSON and the WIT.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::Denied => "denied",
            Self::Unauthorized => "unauthorized",
            Self::NotFound => "not-found",
            Self::Retry => "retry",
            Self::Overloaded => "overloaded",
            Self::Timeout => "timeout",
            Self::Failed => "failed",
            Self::Trapped => "trapped",
        }
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed delivery: its class and a message for a human.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("{class}: {message}")]
pub struct Failure {
    /// The retry class.
    pub class: FailureClass,
    /// What went wrong, and where possible what to do about it.
    pub message: String,
}

impl Failure {
    /// A failure of `class` with `message`.
    pub fn new(class: FailureClass, message: impl Into<String>) -> Self {
        Self { class, message: message.into() }
    }

    /// A failure with its message cut to [`MAX_MESSAGE`] bytes: for text
    /// from outside (a guest's own failure), which travels in one header
    /// and lands in logs and dead letters.
    pub fn capped(class: FailureClass, message: impl Into<String>) -> Self {
        Self::new(class, cap(message.into()))
    }

    /// Nothing serves `name`.
    pub fn not_found(name: &str) -> Self {
        Self::new(FailureClass::NotFound, format!("no handler serves `{name}`"))
    }

    /// The node that was to run a delivery of `name` has gone away
    /// (stopped, or stopping): the same answer on every driver.
    pub fn node_gone(name: &str) -> Self {
        Self::new(FailureClass::Retry, format!("the node that was to run `{name}` has stopped; try again"))
    }

    /// Whether a dispatch failing like this is tried again.
    pub fn retryable(&self) -> bool {
        self.class.retryable()
    }
}

/// The longest failure message kept, in bytes; longer ones are cut (on a
/// character boundary) and say how much was cut. NATS headers, log lines
/// and dead letters carry it, so a handler cannot make it huge.
pub const MAX_MESSAGE: usize = 4096;

/// `message`, cut to [`MAX_MESSAGE`] bytes.
pub fn cap(mut message: String) -> String {
    if message.len() <= MAX_MESSAGE {
        return message;
    }
    let mut end = MAX_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let cut = message.len() - end;
    message.truncate(end);
    message.push_str(&format!("… ({cut} more bytes cut)"));
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_caller_faults_are_final() {
        let never: Vec<_> = FailureClass::ALL.into_iter().filter(|c| !c.retryable()).collect();
        assert_eq!(never, [FailureClass::Invalid, FailureClass::Unauthorized, FailureClass::Denied]);
    }

    #[test]
    fn exit_codes_tell_classes_apart() {
        let mut codes: Vec<_> = FailureClass::ALL.iter().map(|c| c.exit_code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), FailureClass::ALL.len());
    }

    #[test]
    fn a_huge_message_is_cut_on_a_character_boundary_and_says_so() {
        let message = "é".repeat(5000);
        let capped = super::cap(message);
        assert!(capped.len() < super::MAX_MESSAGE + 40);
        assert!(capped.ends_with("(5904 more bytes cut)"), "{}", &capped[capped.len() - 40..]);
    }
}
