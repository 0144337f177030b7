//! Parsing and printing byte sizes.

use trustbridge_protocol::sealed::SegmentSize;

/// Parses a byte count: a plain number, or a number with `KiB`, `MiB` or `GiB` (also `K`,
/// `M`, `G`; all binary).
pub(crate) fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 4194304, 64KiB or 4MiB"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        other => return Err(format!("unknown unit {other:?}: use B, KiB, MiB or GiB")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// clap value parser for `--segment-size`.
pub(crate) fn parse_segment_size(s: &str) -> Result<SegmentSize, String> {
    SegmentSize::new(parse_bytes(s)?).map_err(|e| e.to_string())
}

/// A human-readable size, e.g. `4.0 MiB`.
pub(crate) fn human(bytes: u64) -> String {
    indicatif::BinaryBytes(bytes).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("4194304"), Ok(4 << 20));
        assert_eq!(parse_bytes("4MiB"), Ok(4 << 20));
        assert_eq!(parse_bytes("64K"), Ok(64 << 10));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert!(parse_bytes("4MB").is_err());
        assert!(parse_bytes("").is_err());
        assert!(parse_bytes("x").is_err());
        assert!(parse_segment_size("56").is_err());
        assert!(parse_segment_size("57").is_ok());
    }
}
