//! What a `#![no_std]` plug-in needs on wasm32, installed by [`no_std_runtime!`].
//!
//! Why it matters: a fresh instance per message is the sandbox's main cost. A plug-in that
//! links `std` links WASI, and its component then holds three core instances (the module,
//! the WASI adapter and its shims) where a `no_std` one holds one. The heap is arranged so
//! that a run whose heap fits in 512 KiB (a mapping of an ordinary message) does not grow
//! linear memory: growing costs the host an `mprotect` (and a TLB shoot-down across cores)
//! on the way up and again when the instance is reset. The heap's first 512 KiB are a
//! zeroed static, part of the module's initial memory: copy-on-write, and reset page by
//! page, like the stack. Past that it grows with `memory.grow`, as any heap does.

/// Installs what a `#![no_std]` plug-in needs to link on `wasm32`: a global allocator
/// (dlmalloc, as Rust's std uses on `wasm32-unknown-unknown`, starting in a 512 KiB arena
/// inside the module's initial memory), the canonical ABI's `cabi_realloc`, and a panic
/// handler that traps. Only for `wasm32-wasip1`/`wasip2` (wasi-libc provides `memcpy` and
/// friends; they import nothing), and not with the `atomics` target feature.
///
/// A plug-in that does without `std` links no WASI at all: its component imports only the
/// contract and the capabilities it uses, and the host instantiates it with one core
/// instance instead of three (the module, the WASI adapter and its shims), which makes
/// instantiation about a third cheaper (see `sdk/README.md`). Everything in this SDK, and
/// `alloc` (`String`, `Vec`, `format!`, `BTreeMap`), works without `std`.
///
/// Declare the crate `no_std` for `wasm32` only, so that native `cargo test` and
/// `cargo clippy` builds keep `std`:
///
/// ```
/// #![cfg_attr(target_arch = "wasm32", no_std)]
/// extern crate alloc;
///
/// use alloc::format;
/// use plexus_sdk::{Context, Message, Outcome, Plugin};
///
/// struct Stamp;
///
/// impl Plugin for Stamp {
///     fn transform(msg: &Message, ctx: Context) -> plexus_sdk::Result<Outcome> {
///         msg.write("ZPX-1", &format!("via {}", ctx.interface))?;
///         Ok(Outcome::Forward)
///     }
/// }
///
/// plexus_sdk::export!(Stamp);
/// plexus_sdk::no_std_runtime!();
/// # fn main() {}
/// ```
///
/// A panic in such a plug-in traps without a message (there is nowhere to print it); the
/// host reports the trap, naming the plug-in and version. Do not use this macro in a crate
/// that links `std`: `std` has its own panic handler (and, on wasip2, its own
/// `cabi_realloc`), so the build fails with a duplicate.
#[macro_export]
macro_rules! no_std_runtime {
    () => {
        #[cfg(all(target_arch = "wasm32", target_feature = "atomics"))]
        compile_error!(
            "plexus_sdk::no_std_runtime! is single-threaded: build without the `atomics` target feature"
        );

        #[cfg(target_arch = "wasm32")]
        #[global_allocator]
        static __PLEXUS_HEAP: $crate::__private::Heap = $crate::__private::Heap;

        // `core` calls `memcmp`, `memcpy` and friends, which on wasm32-wasip2 come from
        // wasi-libc (they import nothing); `std` would link it, so without `std` we do.
        #[cfg(all(target_arch = "wasm32", target_os = "wasi"))]
        #[allow(unsafe_code)]
        #[link(name = "c")]
        unsafe extern "C" {}

        // The canonical ABI's allocator for what the host passes in (strings, lists),
        // served from the global allocator above.
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        unsafe extern "C" fn cabi_realloc(
            old_ptr: *mut u8,
            old_len: usize,
            align: usize,
            new_len: usize,
        ) -> *mut u8 {
            // SAFETY: the host calls this as the canonical ABI specifies.
            unsafe { $crate::__private::cabi_realloc(old_ptr, old_len, align, new_len) }
        }

        #[cfg(target_arch = "wasm32")]
        #[panic_handler]
        fn __plexus_panic(_: &::core::panic::PanicInfo<'_>) -> ! {
            ::core::arch::wasm32::unreachable()
        }
    };
}

#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
mod wasm {
    #![allow(unsafe_code)]

    use core::alloc::{GlobalAlloc, Layout};
    use core::cell::UnsafeCell;
    use core::ptr;
    use core::sync::atomic::{AtomicBool, Ordering};

    /// The part of the heap that lives in the module's initial memory.
    const ARENA: usize = 512 << 10;

    const WASM_PAGE: usize = 64 << 10;

    /// dlmalloc's flag for a segment it did not get from the system: never merged.
    const EXTERN: u32 = 1;

    #[repr(C, align(16))]
    struct Arena(UnsafeCell<[u8; ARENA]>);

    // SAFETY: without the `atomics` target feature a wasm32 module has one thread, and
    // only the allocator below (which is handed the arena once) touches the bytes.
    unsafe impl Sync for Arena {}

    static ARENA_BYTES: Arena = Arena(UnsafeCell::new([0; ARENA]));

    /// Where dlmalloc gets memory: the arena first, then `memory.grow`.
    struct Pages {
        arena_taken: AtomicBool,
    }

    // SAFETY: `alloc` hands out the arena at most once and otherwise fresh pages from
    // `memory.grow`; nothing is ever given back (`free` says so by returning `false`).
    unsafe impl dlmalloc::Allocator for Pages {
        fn alloc(&self, size: usize) -> (*mut u8, usize, u32) {
            if size <= ARENA && !self.arena_taken.swap(true, Ordering::Relaxed) {
                // `EXTERN`: a static, not pages from `memory.grow`, so dlmalloc never
                // merges it with a segment that happens to follow it.
                return (ARENA_BYTES.0.get().cast(), ARENA, EXTERN);
            }
            let pages = size.div_ceil(WASM_PAGE);
            let previous = core::arch::wasm32::memory_grow(0, pages);
            if previous == usize::MAX {
                return (ptr::null_mut(), 0, 0);
            }
            let (base, len) = (previous * WASM_PAGE, pages * WASM_PAGE);
            // The very top of the address space: keep a pointer from wrapping to 0.
            let len = if base.wrapping_add(len) == 0 {
                len - 16
            } else {
                len
            };
            (base as *mut u8, len, 0)
        }

        fn remap(&self, _: *mut u8, _: usize, _: usize, _: bool) -> *mut u8 {
            ptr::null_mut()
        }

        fn free_part(&self, _: *mut u8, _: usize, _: usize) -> bool {
            false
        }

        fn free(&self, _: *mut u8, _: usize) -> bool {
            false
        }

        fn can_release_part(&self, _: u32) -> bool {
            false
        }

        fn allocates_zeros(&self) -> bool {
            true
        }

        fn page_size(&self) -> usize {
            WASM_PAGE
        }
    }

    struct State(UnsafeCell<dlmalloc::Dlmalloc<Pages>>);

    // SAFETY: one thread (see `Arena`), and dlmalloc never calls back into the global
    // allocator, so no two borrows of the state overlap.
    unsafe impl Sync for State {}

    static STATE: State = State(UnsafeCell::new(dlmalloc::Dlmalloc::new_with_allocator(
        Pages {
            arena_taken: AtomicBool::new(false),
        },
    )));

    /// The global allocator [`no_std_runtime!`](crate::no_std_runtime) installs.
    #[derive(Debug)]
    pub struct Heap;

    // SAFETY: each method forwards to dlmalloc with the layout it was given, on the one
    // thread there is.
    unsafe impl GlobalAlloc for Heap {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            unsafe { (*STATE.0.get()).malloc(layout.size(), layout.align()) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            unsafe { (*STATE.0.get()).calloc(layout.size(), layout.align()) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { (*STATE.0.get()).free(ptr, layout.size(), layout.align()) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            unsafe { (*STATE.0.get()).realloc(ptr, layout.size(), layout.align(), new_size) }
        }
    }

    /// `cabi_realloc` as the canonical ABI defines it, on the global allocator.
    ///
    /// # Safety
    ///
    /// `old_ptr` and `old_len` must describe a block this function returned with the same
    /// `align` (or `old_len` must be 0). A size or alignment no layout can have traps.
    pub unsafe fn cabi_realloc(
        old_ptr: *mut u8,
        old_len: usize,
        align: usize,
        new_len: usize,
    ) -> *mut u8 {
        use alloc::alloc::{alloc, dealloc, realloc};
        let layout = |len| match Layout::from_size_align(len, align) {
            Ok(layout) => layout,
            Err(_) => core::arch::wasm32::unreachable(),
        };
        // A zero-sized block: any well-aligned non-null pointer will do.
        let empty = align as *mut u8;
        let ptr = match (old_len, new_len) {
            (0, 0) => return empty,
            // SAFETY: a valid layout of non-zero size.
            (0, _) => unsafe { alloc(layout(new_len)) },
            (_, 0) => {
                // SAFETY: the caller passes a block this allocator returned, with its
                // layout.
                unsafe { dealloc(old_ptr, layout(old_len)) };
                return empty;
            }
            // SAFETY: as above, and the new size is non-zero and valid for `align`.
            _ => {
                let new = layout(new_len);
                unsafe { realloc(old_ptr, layout(old_len), new.size()) }
            }
        };
        if ptr.is_null() {
            // Out of memory within the plug-in's memory limit: trap; the host says which.
            core::arch::wasm32::unreachable()
        }
        ptr
    }
}

#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
pub use wasm::{Heap, cabi_realloc};
