//! One test per validation error: each asserts the reported file, line and key.

use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use super::{load, load_str, ConfigError, ConfigIssue, ProfileSource, SiteConfig};

/// A valid site; tests append or replace lines to break it in one place.
const GOOD: &str = r#"[site]
id = "ys-01"
name = "Yushen Semi-coke No. 1"
permit_number = "91610800MA70XXXX1Q001P"
permit_class = "key"
time_zone = "Asia/Shanghai"

[[buses]]
name = "top"
type = "tcp"
address = "127.0.0.1:5020"

[[devices]]
name = "f1-b1"
bus = "top"
unit_id = 1
profile = "seal-node"

[[devices]]
name = "f1-nmhc"
bus = "top"
unit_id = 9
profile = "analyzer"

[[furnaces]]
name = "F1"

[[furnaces.bins]]
name = "B1"
device = "f1-b1"
seal_level_min_mm = 800
max_open_s = 120

[[furnaces.analyzers]]
name = "A1"
device = "f1-nmhc"
"#;

const ANALYZER: &str = r#"description = "test analyzer"

[[points]]
name = "nmhc"
table = "holding"
address = 0
type = "f32"
word_order = "CDAB"

[[points]]
name = "status"
table = "holding"
address = 2
"#;

/// A site held in memory: the config text and its `analyzer` profile, validated by `load_str`
/// as if they were `/plant/site.toml` and `/plant/profiles/analyzer.toml`.
struct Site {
    config: String,
    profiles: BTreeMap<String, String>,
}

impl Site {
    fn new(config: &str, analyzer: &str) -> Self {
        Site {
            config: config.to_owned(),
            profiles: BTreeMap::from([("analyzer".to_owned(), analyzer.to_owned())]),
        }
    }

    fn config_path(&self) -> PathBuf {
        PathBuf::from("/plant/site.toml")
    }

    fn profile_path(&self) -> PathBuf {
        PathBuf::from("/plant/profiles/analyzer.toml")
    }

    fn load(&self) -> Result<SiteConfig, ConfigError> {
        let source = ProfileDirInMemory(&self.profiles);
        load_str(&self.config_path(), self.config.clone(), &source)
    }

    fn issues(&self) -> Vec<ConfigIssue> {
        match self.load() {
            Ok(_) => panic!("config was accepted"),
            Err(ConfigError::Invalid(issues)) => issues,
            Err(other) => panic!("unexpected error {other}"),
        }
    }
}

/// Profiles in memory, placed as a profiles folder next to `/plant/site.toml` would be.
struct ProfileDirInMemory<'a>(&'a BTreeMap<String, String>);

impl ProfileSource for ProfileDirInMemory<'_> {
    fn file_of(&self, profiles_dir: &str, name: &str) -> PathBuf {
        Path::new("/plant")
            .join(profiles_dir)
            .join(format!("{name}.toml"))
    }

    fn read(&self, file: &Path) -> Result<Option<String>, String> {
        self.0.read(file)
    }
}

fn line_of(text: &str, needle: &str, nth: usize) -> usize {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .nth(nth)
        .unwrap_or_else(|| panic!("{needle} not in text"))
        .0
        + 1
}

fn only_issue(site: &Site) -> ConfigIssue {
    let issues = site.issues();
    assert_eq!(issues.len(), 1, "expected one issue, got {issues:#?}");
    issues.into_iter().next().unwrap()
}

fn assert_issue(issue: &ConfigIssue, file: &Path, line: usize, key: &str, says: &str) {
    assert_eq!(issue.file, file, "{issue}");
    assert_eq!(issue.line, Some(line), "{issue}");
    assert_eq!(issue.key, key, "{issue}");
    assert!(
        issue.message.contains(says),
        "message '{}' should say '{says}'",
        issue.message
    );
}

#[test]
fn the_good_config_loads() {
    let site = Site::new(GOOD, ANALYZER);
    let config = site.load().unwrap();
    assert_eq!(config.devices.len(), 2);
    assert_eq!(config.devices[1].profile.points.len(), 2);
    assert_eq!(config.furnaces[0].bins[0].seal_level_min_mm, 800);
}

#[test]
fn unknown_key_is_named_with_its_line() {
    let text = GOOD.replace("unit_id = 9\n", "unit_id = 9\npoll_intervall_ms = 500\n");
    let site = Site::new(&text, ANALYZER);
    let issue = only_issue(&site);
    assert_issue(
        &issue,
        &site.config_path(),
        line_of(&text, "poll_intervall_ms", 0),
        "devices[1].poll_intervall_ms",
        "unknown field",
    );
}

#[test]
fn duplicate_device_name() {
    let text = GOOD.replace("name = \"f1-nmhc\"", "name = \"f1-b1\"");
    let site = Site::new(&text, ANALYZER);
    let issues = site.issues();
    let dup = issues
        .iter()
        .find(|i| i.message.contains("duplicate device name"))
        .expect("duplicate reported");
    assert_issue(
        dup,
        &site.config_path(),
        line_of(&text, "name = \"f1-b1\"", 1),
        "devices[1].name",
        "'f1-b1'",
    );
}

#[test]
fn device_on_unknown_bus() {
    let text = GOOD.replace(
        "bus = \"top\"\nunit_id = 9",
        "bus = \"line-9\"\nunit_id = 9",
    );
    let site = Site::new(&text, ANALYZER);
    let issue = only_issue(&site);
    assert_issue(
        &issue,
        &site.config_path(),
        line_of(&text, "line-9", 0),
        "devices[1].bus",
        "bus 'line-9', which is not defined",
    );
}

#[test]
fn unit_id_outside_range() {
    let text = GOOD.replace("unit_id = 9", "unit_id = 300");
    let site = Site::new(&text, ANALYZER);
    let issue = only_issue(&site);
    assert_issue(
        &issue,
        &site.config_path(),
        line_of(&text, "unit_id = 300", 0),
        "devices[1].unit_id",
        "outside 1–247",
    );
}

#[test]
fn unit_id_zero_is_broadcast_not_a_device() {
    let text = GOOD.replace("unit_id = 9", "unit_id = 0");
    let site = Site::new(&text, ANALYZER);
    assert_issue(
        &only_issue(&site),
        &site.config_path(),
        line_of(&text, "unit_id = 0", 0),
        "devices[1].unit_id",
        "broadcast",
    );
}

#[test]
fn interval_out_of_range() {
    let text = GOOD.replace("unit_id = 9\n", "unit_id = 9\npoll_interval_ms = 5\n");
    let site = Site::new(&text, ANALYZER);
    assert_issue(
        &only_issue(&site),
        &site.config_path(),
        line_of(&text, "poll_interval_ms", 0),
        "devices[1].poll_interval_ms",
        "expected 100–3600000 ms",
    );
}

#[test]
fn profile_missing() {
    let text = GOOD.replace("profile = \"analyzer\"", "profile = \"no-such-analyzer\"");
    let site = Site::new(&text, ANALYZER);
    let issues = site.issues();
    let missing = issues
        .iter()
        .find(|i| i.key == "devices[1].profile")
        .expect("missing profile reported");
    assert_issue(
        missing,
        &site.config_path(),
        line_of(&text, "no-such-analyzer", 0),
        "devices[1].profile",
        "no-such-analyzer.toml",
    );
}

#[test]
fn overlapping_points_are_reported_in_the_profile_file() {
    // status at holding 1 overlaps the f32 at 0..1.
    let profile = ANALYZER.replace("address = 2", "address = 1");
    let site = Site::new(GOOD, &profile);
    let issue = only_issue(&site);
    let file = site.profile_path();
    assert_issue(
        &issue,
        &file,
        line_of(&profile, "address = 1", 0),
        "points[1].address",
        "overlaps point 'nmhc'",
    );
}

#[test]
fn duplicate_point_name_in_profile() {
    let profile = ANALYZER.replace("name = \"status\"", "name = \"nmhc\"");
    let site = Site::new(GOOD, &profile);
    let issue = only_issue(&site);
    let file = site.profile_path();
    assert_issue(
        &issue,
        &file,
        line_of(&profile, "name = \"nmhc\"", 1),
        "points[1].name",
        "duplicate point name",
    );
}

#[test]
fn unknown_bus_type_and_bad_address_reported_together() {
    let text = GOOD
        .replace("type = \"tcp\"", "type = \"udp\"")
        .replace("unit_id = 9", "unit_id = 248");
    let site = Site::new(&text, ANALYZER);
    let issues = site.issues();
    assert_eq!(issues.len(), 2, "{issues:#?}");
    assert_issue(
        &issues[0],
        &site.config_path(),
        line_of(&text, "udp", 0),
        "buses[0].type",
        "expected tcp or rtu",
    );
    assert_issue(
        &issues[1],
        &site.config_path(),
        line_of(&text, "248", 0),
        "devices[1].unit_id",
        "outside 1–247",
    );
}

#[test]
fn tcp_bus_without_port() {
    let text = GOOD.replace("127.0.0.1:5020", "127.0.0.1");
    let site = Site::new(&text, ANALYZER);
    assert_issue(
        &only_issue(&site),
        &site.config_path(),
        line_of(&text, "address = \"127.0.0.1\"", 0),
        "buses[0].address",
        "host:port",
    );
}

#[test]
fn rtu_settings_are_validated() {
    let text = GOOD.replace(
        "[[devices]]\nname = \"f1-b1\"",
        "[[buses]]\nname = \"line-1\"\ntype = \"rtu\"\nport = \"/dev/ttyUSB0\"\nbaud = 9601000\nparity = \"mark\"\n\n[[devices]]\nname = \"f1-b1\"",
    );
    let site = Site::new(&text, ANALYZER);
    let issues = site.issues();
    assert_eq!(issues.len(), 2, "{issues:#?}");
    assert_issue(
        &issues[0],
        &site.config_path(),
        line_of(&text, "baud = 9601000", 0),
        "buses[1].baud",
        "expected one of 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200",
    );
    assert_issue(
        &issues[1],
        &site.config_path(),
        line_of(&text, "mark", 0),
        "buses[1].parity",
        "expected one of none, odd, even",
    );
}

#[test]
fn bin_device_must_be_a_seal_node() {
    let text = GOOD.replace("device = \"f1-b1\"", "device = \"f1-nmhc\"");
    let site = Site::new(&text, ANALYZER);
    let issues = site.issues();
    let issue = issues
        .iter()
        .find(|i| i.key == "furnaces[0].bins[0].device")
        .expect("reported");
    assert_issue(
        issue,
        &site.config_path(),
        line_of(&text, "device = \"f1-nmhc\"", 0),
        "furnaces[0].bins[0].device",
        "no point(s) lid_closed",
    );
}

#[test]
fn syntax_error_names_the_line() {
    let text = GOOD.replace("max_open_s = 120", "max_open_s = = 120");
    let site = Site::new(&text, ANALYZER);
    let issue = only_issue(&site);
    assert_eq!(issue.line, Some(line_of(&text, "max_open_s", 0)), "{issue}");
}

#[test]
fn missing_file_is_a_read_error_naming_the_path() {
    let err = load(Path::new("/nonexistent/site.toml")).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err.to_string().contains("/nonexistent/site.toml"), "{err}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = GOOD
        .replace("permit_class = \"key\"", "permit_class = \"big\"")
        .replace("unit_id = 1\n", "unit_id = 1000\n")
        .replace("seal_level_min_mm = 800", "seal_level_min_mm = -5");
    let site = Site::new(&text, ANALYZER);
    let keys: Vec<String> = site.issues().into_iter().map(|i| i.key).collect();
    assert_eq!(
        keys,
        [
            "site.permit_class",
            "devices[0].unit_id",
            "furnaces[0].bins[0].seal_level_min_mm"
        ]
    );
}

#[test]
fn the_shipped_seal_node_profile_agrees_with_the_firmware_register_map() {
    use super::profile::{Profile, ValueType};
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/profiles/seal-node.toml");
    let shipped = super::load_profile(&path).unwrap_or_else(|e| panic!("{e}"));
    let firmware = Profile::seal_node();
    let expected: String = firmware
        .points
        .iter()
        .map(|p| {
            let ty = match p.value_type {
                ValueType::Bool => String::new(),
                other => format!("type = \"{}\"\n", format!("{other:?}").to_lowercase()),
            };
            let unit = p
                .unit
                .as_ref()
                .map(|u| format!("unit = \"{u}\"\n"))
                .unwrap_or_default();
            format!(
                "\n[[points]]\nname = \"{}\"\ntable = \"{}\"\naddress = {}\n{ty}{unit}",
                p.name, p.table, p.address
            )
        })
        .collect();
    let key = |p: &super::profile::PointDef| {
        (
            p.name.clone(),
            p.table,
            p.address,
            p.value_type,
            p.word_order,
            p.unit.clone(),
            p.fault.clone(),
        )
    };
    assert_eq!(
        shipped.points.iter().map(key).collect::<Vec<_>>(),
        firmware.points.iter().map(key).collect::<Vec<_>>(),
        "config/profiles/seal-node.toml differs from firmware/src/registers.rs; its points should read:\n{expected}"
    );
}

#[test]
fn a_device_timeout_out_of_range_is_named() {
    let text = GOOD.replace("unit_id = 9\n", "unit_id = 9\ntimeout_ms = 5\n");
    let site = Site::new(&text, ANALYZER);
    assert_issue(
        &only_issue(&site),
        &site.config_path(),
        line_of(&text, "timeout_ms = 5", 0),
        "devices[1].timeout_ms",
        "expected 10–60000 ms",
    );
    let text = GOOD.replace("unit_id = 9\n", "unit_id = 9\ntimeout_ms = 2500\n");
    let config = Site::new(&text, ANALYZER).load().unwrap();
    assert_eq!(
        config.devices[1].timeout,
        Some(std::time::Duration::from_millis(2500))
    );
    assert_eq!(config.devices[0].timeout, None, "the bus's timeout applies");
}

#[test]
fn a_status_mapping_with_an_unknown_state_or_overlapping_values_is_refused_in_the_profile() {
    let profile = ANALYZER.replace(
        "address = 2\n",
        "address = 2\nstatus = [\n  { values = [0], state = \"normal\" },\n  { values = [1, 0], state = \"calibrating\" },\n]\n",
    );
    let site = Site::new(GOOD, &profile);
    let issues = site.issues();
    let file = site.profile_path();
    let text = |i: &ConfigIssue| i.to_string();
    assert!(
        issues.iter().any(|i| i.file == file
            && text(i).contains("points[1].status[1].state")
            && text(i).contains("unknown state 'calibrating'")),
        "{issues:#?}"
    );
    assert!(
        issues
            .iter()
            .any(|i| text(i).contains("points[1].status[1].values")
                && text(i).contains("value 0 is already mapped")),
        "{issues:#?}"
    );
}

#[test]
fn a_fault_indicator_naming_an_unknown_sensor_is_refused() {
    let profile = ANALYZER.replace("address = 2\n", "address = 2\nfault_of = \"door\"\n");
    let site = Site::new(GOOD, &profile);
    let issue = only_issue(&site);
    assert!(
        issue.to_string().contains("unknown sensor 'door'"),
        "{issue}"
    );
}

#[test]
fn per_analyzer_limits_must_be_positive_and_the_point_kind_known() {
    let text = GOOD.replace(
        "device = \"f1-nmhc\"\n",
        "device = \"f1-nmhc\"\nnmhc_hourly_limit_mg_m3 = 0\npoint_kind = \"roof\"\n",
    );
    let site = Site::new(&text, ANALYZER);
    let issues: Vec<String> = site.issues().iter().map(ToString::to_string).collect();
    assert!(
        issues.iter().any(
            |i| i.contains("furnaces[0].analyzers[0].nmhc_hourly_limit_mg_m3")
                && i.contains("not a usable limit")
        ),
        "{issues:#?}"
    );
    assert!(issues.iter().any(|i| i.contains("point_kind") && i.contains("unknown monitoring point kind 'roof'")), "{issues:#?}");
    let text = GOOD.replace(
        "device = \"f1-nmhc\"\n",
        "device = \"f1-nmhc\"\nnmhc_hourly_limit_mg_m3 = 6\nnmhc_single_limit_mg_m3 = 20\npoint_kind = \"boundary\"\n",
    );
    let config = Site::new(&text, ANALYZER).load().unwrap();
    let a = &config.furnaces[0].analyzers[0];
    assert_eq!((a.hourly_limit, a.single_limit), (6.0, 20.0));
    assert_eq!(a.point_kind, crate::rules::PointKind::Boundary);
}

#[test]
fn a_key_managed_site_keeps_evidence_five_years() {
    let text = format!("{GOOD}\n[evidence]\nretention_days = 1100\n");
    let site = Site::new(&text, ANALYZER);
    let issue = only_issue(&site);
    assert!(issue.to_string().contains("排污许可管理条例"), "{issue}");
    let config = Site::new(GOOD, ANALYZER).load().unwrap();
    assert_eq!(
        config.evidence.retention.as_secs(),
        1825 * 86_400,
        "the default is five years"
    );
}

#[test]
fn the_seal_node_profile_reads_the_level_and_its_fault_indicators_and_the_rules_use_both() {
    use super::profile::{FaultIndicator, Profile};
    use crate::model::SensorPart;
    let node = Profile::seal_node();
    assert!(node.point("level_mm").is_some());
    assert_eq!(
        node.point("level_fault").and_then(|p| p.fault.clone()),
        Some(FaultIndicator::Flag(SensorPart::Level))
    );
    assert!(matches!(
        node.point("fault_bits").and_then(|p| p.fault.clone()),
        Some(FaultIndicator::Bits(bits)) if bits.iter().any(|b| b.part == SensorPart::Level)
    ));
    let config = Site::new(GOOD, ANALYZER).load().unwrap();
    let points = config.point_table();
    let rules = config.rules_config(&points);
    let role_of = |name: &str| {
        let id = points.by_key(&format!("f1-b1/{name}")).unwrap();
        rules.roles[id.0 as usize]
    };
    assert!(matches!(
        role_of("level_mm"),
        Some(crate::rules::Role::Bin {
            signal: crate::rules::Signal::LevelMm,
            ..
        })
    ));
    for fault in ["level_fault", "lid_fault", "fault_bits"] {
        assert!(
            matches!(role_of(fault), Some(crate::rules::Role::BinFault { .. })),
            "{fault}"
        );
    }
}

#[test]
fn a_device_serving_two_bins_or_a_bin_and_an_analyzer_is_refused() {
    let text = GOOD.replace("device = \"f1-nmhc\"", "device = \"f1-b1\"");
    let issues = Site::new(&text, ANALYZER).issues();
    let shared = issues
        .iter()
        .find(|i| i.message.contains("already serves bin F1/B1"))
        .unwrap_or_else(|| panic!("{issues:#?}"));
    assert_eq!(shared.key, "furnaces[0].analyzers[0].device", "{shared}");
}

#[test]
fn a_status_register_with_a_scale_is_refused() {
    let analyzer = format!(
        "{ANALYZER}scale = 0.1\nstatus = [{{ values = [0], state = \"normal\" }}, {{ values = [1], state = \"C\" }}]\n"
    );
    let site = Site::new(GOOD, &analyzer);
    let issue = only_issue(&site);
    assert_eq!(issue.file, site.profile_path(), "{issue}");
    assert_eq!(issue.key, "points[1].scale", "{issue}");
    assert!(issue.message.contains("takes no scale"), "{issue}");
}

#[test]
fn an_analyzer_range_ending_at_or_below_its_single_limit_is_refused() {
    // range_max 30 with the single-value limit 30: a saturated reading reads 30 whether the
    // gas is at 30 or at 300.
    let analyzer = ANALYZER.replace(
        "word_order = \"CDAB\"",
        "word_order = \"CDAB\"\nrange_max = 30.0",
    );
    let text = format!("{GOOD}nmhc_single_limit_mg_m3 = 30.0\n");
    let site = Site::new(&text, &analyzer);
    let issue = only_issue(&site);
    assert_eq!(issue.key, "furnaces[0].analyzers[0].device", "{issue}");
    assert!(issue.message.contains("ends at 30 mg/m³"), "{issue}");
    // A range above the limit is fine.
    let wider = ANALYZER.replace(
        "word_order = \"CDAB\"",
        "word_order = \"CDAB\"\nrange_max = 50.0",
    );
    Site::new(&text, &wider).load().unwrap();
}

#[test]
fn an_unknown_name_in_a_closed_set_is_reported_with_every_other_problem() {
    let text = GOOD
        .replace("permit_class = \"key\"", "permit_class = \"big\"")
        .replace("unit_id = 9", "unit_id = 0");
    let analyzer = ANALYZER.replace("type = \"f32\"", "type = \"float\"");
    let issues = Site::new(&text, &analyzer).issues();
    let says = |key: &str, text: &str| {
        issues
            .iter()
            .any(|i| i.key == key && i.message.contains(text))
    };
    assert!(
        says(
            "site.permit_class",
            "unknown permit class 'big'; expected one of key, simplified, registration"
        ),
        "{issues:#?}"
    );
    assert!(says("devices[1].unit_id", "outside 1–247"), "{issues:#?}");
    assert!(
        says("points[0].type", "unknown type 'float'"),
        "{issues:#?}"
    );
}

#[test]
fn plain_http_is_allowed_only_to_a_parsed_loopback_host() {
    let with_url = |url: &str| format!("{GOOD}\n[uplink.audit]\nurl = \"{url}\"\n");
    for url in [
        "http://localhost:1@audit.example.com/",
        "http://127.attacker.example/",
        "http://127.0.0.1.example.com/",
        "https://user:pw@audit.example.com/",
        "ftp://127.0.0.1/",
        "http://[::ffff:10.0.0.1]/",
        "not a url",
    ] {
        let text = with_url(url);
        let issue = only_issue(&Site::new(&text, ANALYZER));
        assert_eq!(issue.key, "uplink.audit.url", "{url}: {issue}");
        assert_eq!(issue.line, Some(line_of(&text, "url = ", 0)), "{url}");
    }
    for url in [
        "http://127.0.0.1:8443/",
        "http://127.1.2.3/",
        "http://LOCALHOST:9/",
        "http://[::1]:8443",
        "https://audit.example.com/api",
    ] {
        Site::new(&with_url(url), ANALYZER)
            .load()
            .unwrap_or_else(|e| panic!("{url}: {e}"));
    }
}

#[test]
fn a_name_with_a_slash_or_a_control_character_is_refused_so_keys_cannot_collide() {
    // Furnace "F1" with bin "B1/x" and furnace "F1/B1" with bin "x" would both be "F1/B1/x".
    let cases = [
        (
            GOOD.replace("name = \"B1\"", "name = \"B1/x\""),
            "furnaces[0].bins[0].name",
        ),
        (
            GOOD.replace("name = \"F1\"", "name = \"F1/\""),
            "furnaces[0].name",
        ),
        (
            GOOD.replace("name = \"f1-b1\"", "name = \"f1\\u001b[2J\""),
            "devices[0].name",
        ),
        (
            GOOD.replace("name = \"A1\"", "name = \"\""),
            "furnaces[0].analyzers[0].name",
        ),
        (
            GOOD.replace("name = \"top\"", "name = \"a b\""),
            "buses[0].name",
        ),
    ];
    for (text, key) in cases {
        let issues = Site::new(&text, ANALYZER).issues();
        assert!(
            issues
                .iter()
                .any(|i| i.key == key && i.message.contains("name")),
            "{key}: {issues:#?}"
        );
    }
    let point = ANALYZER.replace("name = \"status\"", "name = \"st/atus\"");
    let issue = only_issue(&Site::new(GOOD, &point));
    assert_eq!(issue.key, "points[1].name", "{issue}");
    // Chinese names are names.
    let chinese = GOOD.replace("name = \"F1\"", "name = \"1号炉\"");
    Site::new(&chinese, ANALYZER).load().unwrap();
}

#[test]
fn non_finite_numbers_are_refused_where_the_file_says_them() {
    let analyzer = ANALYZER.replace(
        "word_order = \"CDAB\"",
        "word_order = \"CDAB\"\nrange_max = nan",
    );
    let site = Site::new(GOOD, &analyzer);
    let issue = only_issue(&site);
    assert_issue(
        &issue,
        &site.profile_path(),
        line_of(&analyzer, "range_max", 0),
        "points[0].range_max",
        "finite",
    );
    let text = GOOD.replace(
        "device = \"f1-nmhc\"",
        "device = \"f1-nmhc\"\nnmhc_single_limit_mg_m3 = inf",
    );
    let issue = only_issue(&Site::new(&text, ANALYZER));
    assert_eq!(
        issue.key, "furnaces[0].analyzers[0].nmhc_single_limit_mg_m3",
        "{issue}"
    );
    assert!(issue.message.contains("finite"), "{issue}");
}

#[test]
fn a_profile_that_cannot_be_read_is_named_as_such_not_replaced_by_the_built_in_one() {
    let dir = tempfile::tempdir().unwrap();
    let profiles = dir.path().join("profiles");
    std::fs::create_dir(&profiles).unwrap();
    // Longer than a profile may be: the built-in seal-node profile must not stand in silently.
    std::fs::write(profiles.join("seal-node.toml"), vec![b'#'; 2 << 20]).unwrap();
    std::fs::write(profiles.join("analyzer.toml"), ANALYZER).unwrap();
    let config = dir.path().join("site.toml");
    std::fs::write(&config, GOOD).unwrap();
    let issues = match load(&config) {
        Err(ConfigError::Invalid(issues)) => issues,
        other => panic!("accepted or other error: {other:?}"),
    };
    assert_eq!(issues.len(), 1, "{issues:#?}");
    assert!(
        issues[0]
            .message
            .contains("profile 'seal-node' cannot be read"),
        "{}",
        issues[0]
    );
    assert!(issues[0].message.contains("longer than"), "{}", issues[0]);
    assert_eq!(issues[0].file, profiles.join("seal-node.toml"));
}
