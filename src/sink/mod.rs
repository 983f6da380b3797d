//! The sink: writing changed groups into the target tables in PostgreSQL. [`target`] creates a
//! view's table and prepares its statements; [`write`] runs the batch's transaction and decides
//! what a failed write means for the view; [`fill`] fills a target whole, in `init`; [`params`]
//! holds the text arrays the statements take.

pub mod fill;
mod params;
pub mod target;
pub mod write;
