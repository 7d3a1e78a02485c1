//! dynreg-resource-resolver (being written).
