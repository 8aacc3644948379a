//! Polling field devices: request plans, decoding, and one task per bus (Modbus TCP or RTU).

pub mod bus;
pub mod decode;
pub mod plan;
pub mod reading;
pub mod rtu;

use crate::config::SiteConfig;
use reading::PointId;

/// Everything known about one point, by [`PointId`].
#[derive(Debug, Clone)]
pub struct PointInfo {
    /// `device/point`, the stable key used in the database.
    pub key: String,
    /// Index of the device in the config.
    pub device: usize,
    /// Index of the point in the device's profile.
    pub index: usize,
    /// Engineering unit.
    pub unit: Option<String>,
    /// Measuring range (low, high), as the profile gives it.
    pub range: (Option<f64>, Option<f64>),
}

/// Numbering of all points of a site: devices in config order, points in profile order.
#[derive(Debug, Clone, Default)]
pub struct PointTable {
    /// Points, indexed by `PointId`.
    pub points: Vec<PointInfo>,
    /// First point id of each device.
    pub device_base: Vec<u32>,
}

impl PointTable {
    /// The point table of a site.
    pub fn new(config: &SiteConfig) -> Self {
        let mut table = PointTable::default();
        for (d, device) in config.devices.iter().enumerate() {
            table.device_base.push(table.points.len() as u32);
            for (i, point) in device.profile.points.iter().enumerate() {
                table.points.push(PointInfo {
                    key: format!("{}/{}", device.name, point.name),
                    device: d,
                    index: i,
                    unit: point.unit.clone(),
                    range: (point.range_min, point.range_max),
                });
            }
        }
        table
    }

    /// Id of point `index` of device `device`.
    pub fn id(&self, device: usize, index: usize) -> PointId {
        PointId(self.device_base[device] + index as u32)
    }

    /// Id of the point with this key.
    pub fn by_key(&self, key: &str) -> Option<PointId> {
        self.points
            .iter()
            .position(|p| p.key == key)
            .map(|i| PointId(i as u32))
    }
}
