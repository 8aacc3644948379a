//! The request plan of a device: which reads cover its profile's points.
//!
//! Points of one table are merged into as few reads as possible: a read spans from its first
//! point's first register to its last point's last register, never more than the table's
//! per-request maximum (125 registers, 2000 bits), and never across more than `max_gap` unused
//! registers between two points. Devices that refuse a merged read (exception 02, because the gap
//! holds registers they do not define) are polled with [`split_per_point`] instead. Plans are a
//! pure, deterministic function of the points and `max_gap`.

use sealwatch_firmware::modbus::{AddressRange, RangeError, Request};
use sealwatch_firmware::registers::Table;

use crate::config::profile::PointDef;

/// One Modbus read request and the points it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    /// Table read.
    pub table: Table,
    /// Addresses read (within the table's per-request maximum).
    pub range: AddressRange,
    /// Indices (into the profile's points) of the points inside, in address order.
    pub points: Vec<usize>,
}

impl ReadRequest {
    /// A read of `count` of `table` from `start` carrying `points`.
    pub fn new(
        table: Table,
        start: u16,
        count: u16,
        points: Vec<usize>,
    ) -> Result<ReadRequest, RangeError> {
        Ok(ReadRequest {
            table,
            range: AddressRange::try_new(start, count, table.max_read())?,
            points,
        })
    }

    /// First address.
    pub fn start(&self) -> u16 {
        self.range.start()
    }

    /// Registers or bits read.
    pub fn count(&self) -> u16 {
        self.range.count()
    }

    /// The request on the wire.
    pub fn request(&self) -> Request<'static> {
        Request::read(self.table, self.range)
    }
}

impl std::fmt::Display for ReadRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}+{}", self.table, self.start(), self.count())
    }
}

/// Merges `points` into reads, as described in the module documentation. A point whose
/// registers run past address 65535 (profile validation refuses such points) is left out.
pub fn plan_reads(points: &[PointDef], max_gap: u16) -> Vec<ReadRequest> {
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by_key(|&i| (points[i].table, points[i].address, i));
    let mut reads: Vec<ReadRequest> = Vec::new();
    for i in order {
        let p = &points[i];
        if let Some(last) = reads.last_mut() {
            let end = u32::from(last.start()) + u32::from(last.count());
            let new_end = end.max(p.end());
            let gap = u32::from(p.address).saturating_sub(end);
            if last.table == p.table && gap <= u32::from(max_gap) {
                let count = u16::try_from(new_end - u32::from(last.start())).unwrap_or(u16::MAX);
                if let Ok(range) = AddressRange::try_new(last.start(), count, p.table.max_read()) {
                    last.range = range;
                    last.points.push(i);
                    continue;
                }
            }
        }
        if let Ok(read) = ReadRequest::new(p.table, p.address, p.width(), vec![i]) {
            reads.push(read);
        }
    }
    reads
}

/// One read per point: the fallback for devices that refuse reads over undefined registers.
pub fn split_per_point(points: &[PointDef]) -> Vec<ReadRequest> {
    plan_reads(points, 0)
        .into_iter()
        .flat_map(|read| {
            read.points
                .into_iter()
                .filter_map(|i| {
                    ReadRequest::new(
                        points[i].table,
                        points[i].address,
                        points[i].width(),
                        vec![i],
                    )
                    .ok()
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::profile::{ValueType, WordOrder};

    fn read(table: Table, start: u16, count: u16, points: Vec<usize>) -> ReadRequest {
        ReadRequest::new(table, start, count, points).unwrap()
    }
    use proptest::prelude::*;

    fn point(table: Table, address: u16, value_type: ValueType) -> PointDef {
        PointDef {
            name: format!("{table}{address}"),
            table,
            address,
            value_type,
            word_order: WordOrder::Abcd,
            scale: 1.0,
            offset: 0.0,
            unit: None,
            range_min: None,
            range_max: None,
            fault: None,
            status: None,
        }
    }

    #[test]
    fn near_points_merge_far_points_do_not() {
        let points = vec![
            point(Table::Holding, 0, ValueType::F32),
            point(Table::Holding, 4, ValueType::U16), // gap of 2: merged with max_gap 2
            point(Table::Holding, 10, ValueType::U16), // gap of 5: new read
            point(Table::Input, 0, ValueType::U16),   // other table: new read
        ];
        let plan = plan_reads(&points, 2);
        assert_eq!(
            plan,
            vec![
                read(Table::Holding, 0, 5, vec![0, 1]),
                read(Table::Holding, 10, 1, vec![2]),
                read(Table::Input, 0, 1, vec![3]),
            ]
        );
        assert_eq!(split_per_point(&points).len(), 4);
    }

    #[test]
    fn a_read_never_exceeds_125_registers() {
        let points: Vec<PointDef> = (0..200)
            .map(|a| point(Table::Holding, a, ValueType::U16))
            .collect();
        let plan = plan_reads(&points, 8);
        assert_eq!(
            plan.iter().map(|r| r.count()).collect::<Vec<_>>(),
            vec![125, 75]
        );
    }

    /// Points without overlaps, as validated profiles guarantee.
    fn profile_points() -> impl Strategy<Value = Vec<PointDef>> {
        let one = (0usize..4, 0u16..400, 0usize..8);
        prop::collection::vec(one, 0..60).prop_map(|raw| {
            let tables = [
                Table::Coil,
                Table::DiscreteInput,
                Table::Holding,
                Table::Input,
            ];
            let types = [
                ValueType::U16,
                ValueType::I16,
                ValueType::U32,
                ValueType::I32,
                ValueType::U64,
                ValueType::F32,
                ValueType::F64,
                ValueType::U16,
            ];
            let mut points: Vec<PointDef> = Vec::new();
            for (t, address, ty) in raw {
                let table = tables[t];
                let value_type = if table.is_bits() {
                    ValueType::Bool
                } else {
                    types[ty]
                };
                let candidate = point(table, address, value_type);
                let overlaps = points.iter().any(|p| {
                    p.table == table
                        && u32::from(p.address) < candidate.end()
                        && u32::from(address) < p.end()
                });
                if !overlaps {
                    points.push(candidate);
                }
            }
            points
        })
    }

    proptest! {
        #[test]
        fn every_point_covered_exactly_once_within_limits(points in profile_points(), max_gap in 0u16..20) {
            let plan = plan_reads(&points, max_gap);
            let mut covered = vec![0usize; points.len()];
            for read in &plan {
                prop_assert!(read.count() >= 1 && read.count() <= read.table.max_read());
                let read_end = u32::from(read.start()) + u32::from(read.count());
                prop_assert!(!read.points.is_empty());
                // Starts at its first point, ends at its last point's end: no wasted edges.
                prop_assert_eq!(read.start(), points[read.points[0]].address);
                prop_assert_eq!(read_end, read.points.iter().map(|&i| points[i].end()).max().unwrap());
                let mut prev_end: Option<u32> = None;
                for &i in &read.points {
                    let p = &points[i];
                    covered[i] += 1;
                    prop_assert_eq!(p.table, read.table);
                    prop_assert!(p.address >= read.start() && p.end() <= read_end);
                    if let Some(prev) = prev_end {
                        prop_assert!(u32::from(p.address).saturating_sub(prev) <= u32::from(max_gap));
                    }
                    prev_end = Some(prev_end.map_or(p.end(), |e| e.max(p.end())));
                }
            }
            prop_assert!(covered.iter().all(|&c| c == 1), "coverage {:?}", covered);
        }

        #[test]
        fn plan_is_deterministic_and_order_independent(points in profile_points(), max_gap in 0u16..20) {
            let a = plan_reads(&points, max_gap);
            let mut reversed = points.clone();
            reversed.reverse();
            let b = plan_reads(&reversed, max_gap);
            let n = points.len();
            // Same reads; point indices refer to the reversed order in `b`.
            let b_mapped: Vec<ReadRequest> = b.into_iter().map(|mut r| {
                r.points = r.points.into_iter().map(|i| n - 1 - i).collect();
                r
            }).collect();
            prop_assert_eq!(&a, &plan_reads(&points, max_gap));
            prop_assert_eq!(a.iter().map(|r| (r.table, r.start(), r.count())).collect::<Vec<_>>(),
                            b_mapped.iter().map(|r| (r.table, r.start(), r.count())).collect::<Vec<_>>());
        }
    }
}
