//! Canonical JSON: one text for one value, so hashes over it are stable.

/// Writes `value` as canonical JSON (sorted keys, compact, non-integers as 3-decimal strings).
pub fn canonical_json(value: &serde_json::Value) -> String {
    fn canon(v: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::Number(n) if n.is_i64() || n.is_u64() => v.clone(),
            Value::Number(n) => Value::String(format!("{:.3}", n.as_f64().unwrap_or(0.0))),
            Value::Array(items) => Value::Array(items.iter().map(canon).collect()),
            // serde_json's map without `preserve_order` is a BTreeMap: keys come out sorted.
            Value::Object(map) => {
                Value::Object(map.iter().map(|(k, v)| (k.clone(), canon(v))).collect())
            }
            other => other.clone(),
        }
    }
    serde_json::to_string(&canon(value)).unwrap_or_else(|_| "null".to_owned())
}
