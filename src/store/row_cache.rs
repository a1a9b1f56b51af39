//! Rows read by key, kept in memory on SQLite until a write to their table commits.
//!
//! On SQLite this process is the only writer of the cached tables (connections and invitations
//! change only through the API and the service's own background work; the CLI's imports write
//! other tables), and every write goes through the one writer connection. Its update hook marks
//! the cache of each table a statement changes, and the batch's commit empties those caches.
//! PostgreSQL has no such cache: other instances write the same rows.
//!
//! Consistency, like a seqlock: the generation is odd while a commit that changed the table is
//! in progress (the cache is emptied when it starts and again when it ends), and a read keeps
//! its row only if the generation is still the even one it saw before reading. A row read
//! before a commit therefore never outlives that commit in the cache, and while a commit is in
//! progress every read goes to the database.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

pub struct RowCache<T> {
    table: &'static str,
    capacity: usize,
    /// Set by the writer's update hook: a statement of the open batch changed the table.
    changed: AtomicBool,
    state: Mutex<State<T>>,
}

struct State<T> {
    generation: u64,
    rows: HashMap<Arc<str>, Arc<T>>,
    /// Keys in the order they were kept: the oldest goes first when the cache is full.
    order: VecDeque<Arc<str>>,
}

/// What a read must hand back to `keep` its row: the generation before it read.
#[derive(Debug, Clone, Copy)]
pub struct ReadStart(u64);

impl<T> RowCache<T> {
    pub fn new(table: &'static str, capacity: usize) -> Self {
        Self {
            table,
            capacity,
            changed: AtomicBool::new(false),
            state: Mutex::new(State {
                generation: 0,
                rows: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State<T>> {
        // Every update leaves the state whole; a panic elsewhere while it was held cannot
        // have broken it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached row, or the mark to read it with.
    pub fn get(&self, key: &str) -> Result<Arc<T>, ReadStart> {
        let state = self.state();
        state
            .rows
            .get(key)
            .cloned()
            .ok_or(ReadStart(state.generation))
    }

    /// Keeps a row read after `start`, unless a commit that changed the table began since.
    pub fn keep(&self, key: &str, row: Arc<T>, start: ReadStart) {
        if self.capacity == 0 {
            return;
        }
        let mut state = self.state();
        if state.generation != start.0 || start.0 % 2 == 1 || state.rows.contains_key(key) {
            return;
        }
        while state.rows.len() >= self.capacity {
            let Some(oldest) = state.order.pop_front() else {
                break;
            };
            state.rows.remove(&oldest);
        }
        let key: Arc<str> = Arc::from(key);
        state.order.push_back(Arc::clone(&key));
        state.rows.insert(key, row);
    }

    fn forget_all(&self, state: &mut State<T>) {
        state.rows.clear();
        state.order.clear();
        state.generation += 1;
    }
}

/// The writer's side of a cache, whatever its row type.
pub(super) trait Invalidate: Send + Sync {
    fn table(&self) -> &'static str;
    /// A statement changed the table (called from SQLite's update hook).
    fn mark_changed(&self);
    /// The batch is about to commit or roll back.
    fn before_commit(&self);
    /// The batch has committed or rolled back.
    fn after_commit(&self);
}

impl<T: Send + Sync> Invalidate for RowCache<T> {
    fn table(&self) -> &'static str {
        self.table
    }

    fn mark_changed(&self) {
        self.changed.store(true, Ordering::Relaxed);
    }

    fn before_commit(&self) {
        if self.changed.load(Ordering::Relaxed) {
            let mut state = self.state();
            self.forget_all(&mut state);
        }
    }

    fn after_commit(&self) {
        if self.changed.swap(false, Ordering::Relaxed) {
            let mut state = self.state();
            self.forget_all(&mut state);
        }
    }
}

/// The caches the writer keeps current.
#[derive(Default)]
pub(super) struct Caches(Mutex<Vec<Arc<dyn Invalidate>>>);

impl Caches {
    fn all(&self) -> MutexGuard<'_, Vec<Arc<dyn Invalidate>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn register(&self, cache: Arc<dyn Invalidate>) {
        self.all().push(cache);
    }

    pub(super) fn changed(&self, table: &str) {
        for cache in self.all().iter().filter(|c| c.table() == table) {
            cache.mark_changed();
        }
    }

    pub(super) fn before_commit(&self) {
        for cache in self.all().iter() {
            cache.before_commit();
        }
    }

    pub(super) fn after_commit(&self) {
        for cache in self.all().iter() {
            cache.after_commit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(capacity: usize) -> RowCache<&'static str> {
        RowCache::new("t", capacity)
    }

    fn read(cache: &RowCache<&'static str>, key: &str, value: &'static str) -> ReadStart {
        let start = cache.get(key).expect_err("not cached yet");
        cache.keep(key, Arc::new(value), start);
        start
    }

    #[test]
    fn a_row_read_is_served_until_its_table_changes() {
        let cache = cache(8);
        read(&cache, "a", "old");
        assert_eq!(*cache.get("a").unwrap(), "old");
        cache.mark_changed();
        // Until the batch commits, the database still holds what the cache holds.
        assert_eq!(*cache.get("a").unwrap(), "old");
        cache.before_commit();
        assert!(cache.get("a").is_err());
        cache.after_commit();
        assert!(cache.get("a").is_err());
    }

    #[test]
    fn a_row_read_before_a_commit_is_not_kept_after_it() {
        let cache = cache(8);
        let start = cache.get("a").unwrap_err();
        cache.mark_changed();
        cache.before_commit();
        cache.after_commit();
        cache.keep("a", Arc::new("old"), start);
        assert!(cache.get("a").is_err());
    }

    #[test]
    fn nothing_is_kept_while_a_commit_is_in_progress() {
        let cache = cache(8);
        cache.mark_changed();
        cache.before_commit();
        // Read between the start of the commit and its end: it may predate the commit.
        let start = cache.get("a").unwrap_err();
        cache.keep("a", Arc::new("maybe old"), start);
        assert!(cache.get("a").is_err());
        cache.after_commit();
        read(&cache, "a", "new");
        assert_eq!(*cache.get("a").unwrap(), "new");
    }

    #[test]
    fn a_batch_that_did_not_touch_the_table_leaves_it_cached() {
        let cache = cache(8);
        read(&cache, "a", "row");
        cache.before_commit();
        cache.after_commit();
        assert_eq!(*cache.get("a").unwrap(), "row");
    }

    #[test]
    fn the_oldest_row_goes_when_the_cache_is_full() {
        let cache = cache(2);
        read(&cache, "a", "1");
        read(&cache, "b", "2");
        read(&cache, "c", "3");
        assert!(cache.get("a").is_err());
        assert_eq!(*cache.get("b").unwrap(), "2");
        assert_eq!(*cache.get("c").unwrap(), "3");
    }

    #[test]
    fn capacity_zero_keeps_nothing() {
        let cache = cache(0);
        read(&cache, "a", "1");
        assert!(cache.get("a").is_err());
    }

    #[test]
    fn the_registry_marks_only_the_changed_table() {
        let caches = Caches::default();
        let connections = Arc::new(RowCache::<&str>::new("audience_connections", 4));
        let invitations = Arc::new(RowCache::<&str>::new("invitations", 4));
        caches.register(connections.clone());
        caches.register(invitations.clone());
        read(&connections, "c", "connection");
        read(&invitations, "i", "invitation");
        caches.changed("invitations");
        caches.before_commit();
        caches.after_commit();
        assert!(connections.get("c").is_ok());
        assert!(invitations.get("i").is_err());
    }
}
