//! `BPF_F_MMAPABLE` arrays mapped into this process: the daemon and the programs share the
//! same memory (sessions' counters and replay windows, peers' activity), updated on both
//! sides with atomics.

use std::marker::PhantomData;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

use super::error::{DataplaneError, Result};

/// An mmap of a BPF array whose values are `T`. The kernel lays values out at a stride of
/// `value_size` rounded up to 8 bytes.
pub struct MappedArray<T> {
    base: NonNull<u8>,
    len: usize,
    stride: usize,
    entries: u32,
    _values: PhantomData<T>,
}

// SAFETY: the mapping is plain shared memory; every field the planes share is accessed with
// atomics or volatile accesses through raw slot pointers, never through `&mut T` aliases.
unsafe impl<T> Send for MappedArray<T> {}
unsafe impl<T> Sync for MappedArray<T> {}

impl<T> MappedArray<T> {
    /// Maps the array behind `fd` (`entries` values of `value_size` bytes each).
    pub fn new(fd: BorrowedFd<'_>, entries: u32, value_size: u32) -> Result<Self> {
        if (value_size as usize) < size_of::<T>() {
            return Err(DataplaneError::Object(format!(
                "map values are {value_size} bytes, expected at least {}",
                size_of::<T>()
            )));
        }
        let stride = (value_size as usize).next_multiple_of(8);
        let len = stride * entries as usize;
        if len == 0 {
            return Err(DataplaneError::Invalid("an empty array cannot be mapped".into()));
        }
        // SAFETY: a fresh shared mapping of the map's fd; the kernel checks the length.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(DataplaneError::kernel(
                "mmap of a BPF_F_MMAPABLE array",
                std::io::Error::last_os_error(),
            ));
        }
        let base = NonNull::new(p as *mut u8).ok_or_else(|| {
            DataplaneError::kernel("mmap of a BPF_F_MMAPABLE array", "returned null")
        })?;
        Ok(MappedArray { base, len, stride, entries, _values: PhantomData })
    }

    pub fn entries(&self) -> u32 {
        self.entries
    }

    /// The value at `index`, or None past the end. The pointer stays valid as long as `self`.
    pub fn slot(&self, index: u32) -> Option<*mut T> {
        (index < self.entries)
            // SAFETY: index * stride < len, inside the mapping.
            .then(|| unsafe { self.base.as_ptr().add(index as usize * self.stride) as *mut T })
    }
}

impl<T> Drop for MappedArray<T> {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping created in `new`.
        unsafe { libc::munmap(self.base.as_ptr() as *mut libc::c_void, self.len) };
    }
}
