//! dynreg-hot-reload (being written).
