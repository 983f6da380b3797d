//! The sink: writing changed groups into the target tables in PostgreSQL. [`target`] creates a
//! view's table and prepares its statements; [`write`] runs the batch's transaction and decides
//! what a failed write means for the view; [`fill`] fills a target whole, in `init`.

pub mod fill;
pub mod target;
pub mod write;
