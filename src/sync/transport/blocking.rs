//! The one blocking adapter over the async `ObjectStore`: the sync runs on its own
//! thread and calls the store through this, instead of `block_on` at every call site.
//! Must never be used from a tokio worker thread (`block_on` there panics), and needs a
//! multi-thread runtime (a current-thread runtime's handle cannot drive network I/O).

use std::sync::Arc;

use bytes::Bytes;

use crate::store::{ObjectStore, StoreResult};

#[derive(Clone)]
pub struct BlockingStore {
    store: Arc<dyn ObjectStore>,
    rt: tokio::runtime::Handle,
}

impl BlockingStore {
    pub fn new(store: Arc<dyn ObjectStore>, rt: tokio::runtime::Handle) -> BlockingStore {
        BlockingStore { store, rt }
    }

    pub fn get(&self, key: &str) -> StoreResult<Bytes> {
        self.rt.block_on(self.store.get(key))
    }

    /// Several objects at once (16 requests in flight), answers in the order asked: one
    /// by one, the checks of a first sync's thousands of entries would take minutes.
    pub fn get_many(&self, keys: &[String]) -> Vec<StoreResult<Bytes>> {
        use futures::stream::{self, StreamExt};
        self.rt.block_on(
            stream::iter(keys)
                .map(|k| self.store.get(k))
                .buffered(16)
                .collect(),
        )
    }

    pub fn head(&self, key: &str) -> StoreResult<Option<u64>> {
        self.rt.block_on(self.store.head(key))
    }

    pub fn list(&self, prefix: &str) -> StoreResult<Vec<String>> {
        self.rt.block_on(self.store.list(prefix))
    }

    pub fn put(&self, key: &str, data: Bytes) -> StoreResult<()> {
        self.rt.block_on(self.store.put(key, data))
    }

    pub fn put_if_absent(&self, key: &str, data: Bytes) -> StoreResult<bool> {
        self.rt.block_on(self.store.put_if_absent(key, data))
    }

    pub fn delete(&self, key: &str) -> StoreResult<()> {
        self.rt.block_on(self.store.delete(key))
    }

    pub fn describe(&self) -> String {
        self.store.describe()
    }
}
