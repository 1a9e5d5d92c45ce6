"""What users write: units, the drug library, prescriptions (.toml) and scenarios."""
