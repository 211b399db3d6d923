//! How a file is cut into multipart-upload parts. R2 rejects a completion unless every part
//! but the last has the same size, and S3 wants parts of at least 5 MiB and at most 10,000.

/// Above this size an image goes up in parts (one PUT can take ~5 GiB; parts can be retried
/// one by one and sent concurrently).
pub const DEFAULT_THRESHOLD: u64 = 64 << 20;
/// The size of each part but the last.
pub const DEFAULT_PART_SIZE: u64 = 16 << 20;
/// S3's smallest part (except the last).
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// S3's most parts in one upload.
pub const MAX_PARTS: u64 = 10_000;

/// One part: its 1-based number, and the byte range of the file it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    pub number: i32,
    pub offset: u64,
    pub length: u64,
}

/// How to upload a file of `size` bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// One PUT.
    Single,
    /// Parts of equal size except the last, in order, covering the file exactly.
    Multipart(Vec<Part>),
}

/// Plans the upload of `size` bytes: one PUT up to `threshold`, parts of `part_size` above it.
/// `part_size` is raised to S3's minimum, and grown if the file would need more than 10,000.
pub fn part_plan(size: u64, threshold: u64, part_size: u64) -> Plan {
    if size <= threshold || size == 0 {
        return Plan::Single;
    }
    let part_size = part_size.max(MIN_PART_SIZE).max(size.div_ceil(MAX_PARTS));
    let count = size.div_ceil(part_size);
    if count <= 1 {
        return Plan::Single;
    }
    let parts = (0..count)
        .map(|i| {
            let offset = i * part_size;
            Part {
                number: (i + 1) as i32,
                offset,
                length: part_size.min(size - offset),
            }
        })
        .collect();
    Plan::Multipart(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn parts(plan: Plan) -> Vec<Part> {
        match plan {
            Plan::Multipart(parts) => parts,
            Plan::Single => panic!("expected a multipart plan"),
        }
    }

    /// Every plan: parts numbered from 1, contiguous, covering the file, all equal but the last,
    /// which is no larger than the others.
    fn assert_valid(size: u64, parts: &[Part]) {
        let mut next = 0;
        for (i, part) in parts.iter().enumerate() {
            assert_eq!(part.number, i as i32 + 1);
            assert_eq!(part.offset, next);
            assert!(part.length > 0);
            next += part.length;
        }
        assert_eq!(next, size, "parts cover the file exactly");
        let first = parts[0].length;
        assert!(parts[..parts.len() - 1].iter().all(|p| p.length == first));
        assert!(parts.last().unwrap().length <= first);
        assert!(first >= MIN_PART_SIZE);
        assert!(parts.len() as u64 <= MAX_PARTS);
    }

    #[test]
    fn small_files_go_in_one_put() {
        assert_eq!(part_plan(0, 0, MIB), Plan::Single);
        assert_eq!(part_plan(64 * MIB, 64 * MIB, 16 * MIB), Plan::Single);
        assert_eq!(part_plan(10, 0, 16 * MIB), Plan::Single, "fits one part");
    }

    #[test]
    fn large_files_are_cut_into_equal_parts_and_a_shorter_last_one() {
        let size = 100 * MIB + 3;
        let plan = parts(part_plan(size, 64 * MIB, 16 * MIB));
        assert_valid(size, &plan);
        assert_eq!(plan.len(), 7);
        assert_eq!(plan[6].length, 4 * MIB + 3);
    }

    #[test]
    fn an_exact_multiple_has_no_short_last_part() {
        let plan = parts(part_plan(48 * MIB, 0, 16 * MIB));
        assert_valid(48 * MIB, &plan);
        assert_eq!(plan.len(), 3);
        assert_eq!(plan[2].length, 16 * MIB);
    }

    #[test]
    fn parts_are_never_below_the_s3_minimum() {
        let size = 12 * MIB;
        let plan = parts(part_plan(size, 1, 1));
        assert_valid(size, &plan);
        assert_eq!(
            plan.iter().map(|p| p.length).collect::<Vec<_>>(),
            [5 * MIB, 5 * MIB, 2 * MIB]
        );
    }

    #[test]
    fn huge_files_get_bigger_parts_to_stay_within_ten_thousand() {
        let size = 200 * 1024 * MIB + 1;
        let plan = parts(part_plan(size, 64 * MIB, 5 * MIB));
        assert_valid(size, &plan);
        assert!(plan.len() as u64 <= MAX_PARTS);
    }
}
