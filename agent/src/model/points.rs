//! The numbering of a site's points.

use super::PointId;

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
    /// Adds the next device (index `device_base.len()`) named `device` with `points`:
    /// `(name, unit, range)` in profile order.
    pub fn push_device<'a>(
        &mut self,
        device: &str,
        points: impl IntoIterator<Item = (&'a str, Option<&'a str>, (Option<f64>, Option<f64>))>,
    ) {
        let d = self.device_base.len();
        self.device_base.push(self.points.len() as u32);
        for (i, (name, unit, range)) in points.into_iter().enumerate() {
            self.points.push(PointInfo {
                key: format!("{device}/{name}"),
                device: d,
                index: i,
                unit: unit.map(str::to_owned),
                range,
            });
        }
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
