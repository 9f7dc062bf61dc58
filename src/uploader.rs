//! Background upload of dirty blobs (API published first; implementation follows —
//! every body below is `todo!()` until then).

use std::sync::Arc;
use std::time::Duration;

use crate::cache::Cache;
use crate::store::ObjectStore;

pub struct Uploader {}

#[allow(unused_variables)]
impl Uploader {
    pub fn start(cache: Arc<Cache>, store: Arc<dyn ObjectStore>) -> Uploader {
        todo!()
    }
    pub fn pending(&self) -> (u64, u64) {
        todo!()
    }
    pub async fn drain(&self, timeout: Duration) -> bool {
        todo!()
    }
    pub fn last_error(&self) -> Option<String> {
        todo!()
    }
    pub async fn shutdown(self) {
        todo!()
    }
}
