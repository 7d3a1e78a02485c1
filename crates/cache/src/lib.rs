//! dynreg-cache (being written).
