//! PLACEHOLDER until the yaml branch is merged: JSON only.
pub fn parse(text: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(text).map_err(|e| e.to_string())
}
