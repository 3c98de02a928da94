"""Settlement at central: intervals (latest versions) -> VEE -> versioned settlement runs -> reconciliation per
feeder -> NEM12 export and reports (docs/settlement.md)."""
