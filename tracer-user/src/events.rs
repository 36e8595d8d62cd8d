//! Decoding ring-buffer records from their `#[repr(C)]` wire form (`tracer-common`).
use lockgraph::LockKind;
use tracer_common::{
    kind, op, record, ClassEvent, DependencyEvent, LockOpEvent, TaskEvent, COMM_LEN,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    LockOp(LockOpEvent),
    Dependency(DependencyEvent),
    Class(ClassEvent),
    Exec(TaskEvent),
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("ring-buffer record too short ({len} bytes)")]
    Short { len: usize },
    #[error("unknown ring-buffer record tag {0}")]
    UnknownRecord(u32),
}

fn read_pod<T: Copy>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() < size_of::<T>() {
        return Err(DecodeError::Short { len: bytes.len() });
    }
    // SAFETY: length checked; T is a tracer-common #[repr(C)] integer-only type, so any
    // bit pattern is valid; read_unaligned copes with ring-buffer alignment.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

impl TryFrom<&[u8]> for Record {
    type Error = DecodeError;

    fn try_from(bytes: &[u8]) -> Result<Self, Self::Error> {
        let tag: u32 = read_pod(bytes)?;
        match tag {
            record::LOCK_OP => Ok(Self::LockOp(read_pod(bytes)?)),
            record::DEPENDENCY => Ok(Self::Dependency(read_pod(bytes)?)),
            record::CLASS => Ok(Self::Class(read_pod(bytes)?)),
            record::EXEC => Ok(Self::Exec(read_pod(bytes)?)),
            other => Err(DecodeError::UnknownRecord(other)),
        }
    }
}

/// [`tracer_common::op`] as a Rust enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockOp {
    Acquire,
    Acquired,
    Release,
    AcquireFailed,
}

impl TryFrom<u32> for LockOp {
    type Error = u32;

    fn try_from(value: u32) -> Result<Self, u32> {
        match value {
            op::ACQUIRE => Ok(Self::Acquire),
            op::ACQUIRED => Ok(Self::Acquired),
            op::RELEASE => Ok(Self::Release),
            op::ACQUIRE_FAILED => Ok(Self::AcquireFailed),
            other => Err(other),
        }
    }
}

impl LockOp {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Acquire => "acquire",
            Self::Acquired => "acquired",
            Self::Release => "release",
            Self::AcquireFailed => "failed",
        }
    }
}

/// A [`tracer_common::kind`] value as the graph engine's lock kind.
pub fn lock_kind(value: u32) -> Result<LockKind, u32> {
    match value {
        kind::MUTEX => Ok(LockKind::Mutex),
        kind::RWSEM => Ok(LockKind::Rwsem),
        kind::PSEUDO => Ok(LockKind::Pseudo),
        kind::PTHREAD_MUTEX => Ok(LockKind::PthreadMutex),
        kind::PTHREAD_RWLOCK => Ok(LockKind::PthreadRwlock),
        other => Err(other),
    }
}

/// The name of a wire kind, "unknown" for a value this build does not know.
pub fn lock_kind_name(value: u32) -> &'static str {
    lock_kind(value).map_or("unknown", lockgraph::LockKind::as_str)
}

/// A NUL-padded kernel string (a task's comm, a class name) as text.
pub fn c_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

pub fn comm_str(comm: &[u8; COMM_LEN]) -> String {
    c_str(comm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_lock_op_and_rejects_short_or_unknown_records() {
        let event = LockOpEvent {
            record: record::LOCK_OP,
            op: op::RELEASE,
            kind: kind::PTHREAD_MUTEX,
            flags: 0,
            timestamp_ns: 7,
            lock: 0xdead_beef,
            pid: 10,
            tid: 11,
            comm: *b"worker\0\0\0\0\0\0\0\0\0\0",
        };
        // SAFETY: viewing a repr(C) value as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw const event).cast::<u8>(), size_of::<LockOpEvent>())
        };
        assert_eq!(Record::try_from(bytes).unwrap(), Record::LockOp(event));
        assert!(matches!(
            Record::try_from(&bytes[..20]),
            Err(DecodeError::Short { len: 20 })
        ));
        let mut unknown = bytes.to_vec();
        unknown[0] = 99;
        assert!(matches!(
            Record::try_from(&unknown[..]),
            Err(DecodeError::UnknownRecord(99))
        ));
        assert_eq!(LockOp::try_from(op::RELEASE), Ok(LockOp::Release));
        assert_eq!(LockOp::try_from(42), Err(42));
        assert_eq!(comm_str(&event.comm), "worker");
    }
}
