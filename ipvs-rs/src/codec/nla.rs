//! Small helpers shared by the attribute codecs.

use netlink_packet_core::{DecodeError, Emitable, Nla, NlaBuffer, NlasIterator};

/// Parses every attribute of `payload` with `parse`, adding `context` to
/// errors. Truncated or overlong attributes are errors, never panics.
pub(crate) fn parse_all<T>(
    payload: &[u8],
    context: &str,
    mut parse: impl FnMut(&NlaBuffer<&[u8]>) -> Result<T, DecodeError>,
) -> Result<Vec<T>, DecodeError> {
    let mut out = Vec::new();
    for nla in NlasIterator::new(payload) {
        let nla = nla.map_err(|e| DecodeError::from(format!("{context}: {e}")))?;
        out.push(parse(&nla).map_err(|e| DecodeError::from(format!("{context}: {e}")))?);
    }
    Ok(out)
}

/// Total emitted length of a list of attributes.
pub(crate) fn nested_len<T: Nla>(nlas: &[T]) -> usize {
    nlas.iter().map(Emitable::buffer_len).sum()
}

/// Emits a list of attributes one after the other.
pub(crate) fn emit_nested<T: Nla>(nlas: &[T], buffer: &mut [u8]) {
    let mut at = 0;
    for nla in nlas {
        let len = nla.buffer_len();
        nla.emit(&mut buffer[at..at + len]);
        at += len;
    }
}

/// A NUL-terminated string value.
pub(crate) fn emit_cstr(s: &str, buffer: &mut [u8]) {
    buffer[..s.len()].copy_from_slice(s.as_bytes());
    buffer[s.len()] = 0;
}

/// An error naming the attribute whose value is wrong.
pub(crate) fn invalid(name: &str, e: DecodeError) -> DecodeError {
    DecodeError::from(format!("invalid {name} value: {e}"))
}

/// Reads a counter sent either as u32 or as u64 (the kernel uses both widths
/// inside the stats nests).
pub(crate) fn parse_u32_or_u64(payload: &[u8]) -> Result<u64, DecodeError> {
    match payload.len() {
        4 => netlink_packet_core::parse_u32(payload).map(u64::from),
        8 => netlink_packet_core::parse_u64(payload),
        n => Err(DecodeError::invalid_number(8, n)),
    }
}
