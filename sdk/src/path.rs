//! Building terser paths for loops over occurrences and repetitions.
//!
//! Paths are 1-based: `SEG[occurrence]-field[repetition]-component-subcomponent`, and `[1]`
//! may be left out. These builders leave it out, so the paths in errors read the way
//! people write them: `PV1-7-1` for the first, `PV1-7[2]-1` and `OBR[2]-16-1` after.

use crate::prelude::*;
/// `PID` for the first occurrence, `PID[2]` for the second.
pub fn segment(name: &str, occurrence: u32) -> String {
    if occurrence == 1 {
        name.to_owned()
    } else {
        format!("{name}[{occurrence}]")
    }
}

/// `PV1-7` for the first repetition of field 7 of `segment_path`, `PV1-7[2]` for the
/// second. `segment_path` is what [`segment`] returns.
pub fn repetition(segment_path: &str, field: u32, repetition: u32) -> String {
    if repetition == 1 {
        format!("{segment_path}-{field}")
    } else {
        format!("{segment_path}-{field}[{repetition}]")
    }
}

/// `base` with one more level: `child("PV1-7[2]", 9)` is `PV1-7[2]-9`.
pub fn child(base: &str, position: u32) -> String {
    format!("{base}-{position}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_positions_are_left_out() {
        assert_eq!(segment("SCH", 1), "SCH");
        assert_eq!(segment("OBR", 3), "OBR[3]");
        assert_eq!(repetition("PV1", 7, 1), "PV1-7");
        assert_eq!(repetition("PV1", 7, 2), "PV1-7[2]");
        assert_eq!(repetition(&segment("ORC", 2), 12, 3), "ORC[2]-12[3]");
        assert_eq!(child(&child("PV1-7[2]", 9), 2), "PV1-7[2]-9-2");
    }
}
