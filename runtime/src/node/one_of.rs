//! [`OneOf2`] to [`OneOf16`]: one future type for whichever operation a request runs.
//!
//! A generated node picks the handler's method by the request's operation, and each method
//! returns a future of its own type. `process` needs one type for all of them. An `async`
//! block around the call would be that type, but it is a state machine of its own: it keeps
//! the request it hands on (a second copy of the input in every request in flight, 192 bytes
//! for the PostgreSQL connection manager's) and moves the answer out once more. These enums
//! are that one type without a layer: variant `Vi` holds the future of the node's operation
//! `i`, polled where it is. Nodes with more than [`ONE_OF_MAX`] operations nest: the last
//! variant holds the rest.
//!
//! Pinning is structural, the rule `futures::future::Either` follows: a variant's future is
//! pinned whenever the enum is. That holds because nothing here moves a future out of a
//! pinned enum or swaps its variant, the enums have no `Drop` of their own, and they are
//! `Unpin` only when every future is (the compiler's own rule for enums).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The most operations one enum holds ([`OneOf16`]).
pub const ONE_OF_MAX: usize = 16;

macro_rules! one_of {
    ($name:ident, $count:literal: $($variant:ident $future:ident),+) => {
        #[doc = concat!("The future of one of ", $count, " operations (see the module's documentation).")]
        #[derive(Debug)]
        pub enum $name<$($future),+> {
            $(
                #[doc = concat!("Operation `", stringify!($variant), "`'s future.")]
                $variant($future),
            )+
        }

        impl<T, $($future: Future<Output = T>),+> Future for $name<$($future),+> {
            type Output = T;

            fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
                // SAFETY: pinning is structural (module documentation): the future is pinned
                // in place for as long as `self` is, and is never moved out or replaced.
                unsafe {
                    match self.get_unchecked_mut() {
                        $(Self::$variant(future) => Pin::new_unchecked(future).poll(cx),)+
                    }
                }
            }
        }
    };
}

one_of!(OneOf2, 2: V0 A, V1 B);
one_of!(OneOf3, 3: V0 A, V1 B, V2 C);
one_of!(OneOf4, 4: V0 A, V1 B, V2 C, V3 D);
one_of!(OneOf5, 5: V0 A, V1 B, V2 C, V3 D, V4 E);
one_of!(OneOf6, 6: V0 A, V1 B, V2 C, V3 D, V4 E, V5 F);
one_of!(OneOf7, 7: V0 A, V1 B, V2 C, V3 D, V4 E, V5 F, V6 G);
one_of!(OneOf8, 8: V0 A, V1 B, V2 C, V3 D, V4 E, V5 F, V6 G, V7 H);
one_of!(OneOf9, 9: V0 A, V1 B, V2 C, V3 D, V4 E, V5 F, V6 G, V7 H, V8 I);
one_of!(OneOf10, 10: V0 A, V1 B, V2 C, V3 D, V4 E, V5 F, V6 G, V7 H, V8 I, V9 J);
one_of!(OneOf11, 11: V0 A, V1 B, V2 C, V3 D, V4 E, V5 F, V6 G, V7 H, V8 I, V9 J, V10 K);
one_of!(OneOf12, 12: V0 A, V1 B, V2 C, V3 D, V4 E, V5 F, V6 G, V7 H, V8 I, V9 J, V10 K, V11 L);
one_of!(OneOf13, 13: V0 A, V1 B, V2 C, V3 D, V4 E, V5 F, V6 G, V7 H, V8 I, V9 J, V10 K, V11 L, V12 M);
one_of!(OneOf14, 14: V0 A, V1 B, V2 C, V3 D, V4 E, V5 F, V6 G, V7 H, V8 I, V9 J, V10 K, V11 L, V12 M, V13 N);
one_of!(OneOf15, 15: V0 A, V1 B, V2 C, V3 D, V4 E, V5 F, V6 G, V7 H, V8 I, V9 J, V10 K, V11 L, V12 M, V13 N, V14 O);
one_of!(OneOf16, 16: V0 A, V1 B, V2 C, V3 D, V4 E, V5 F, V6 G, V7 H, V8 I, V9 J, V10 K, V11 L, V12 M, V13 N, V14 O, V15 P);

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::marker::PhantomPinned;
    use std::rc::Rc;

    use super::*;

    /// Ready on its second poll; notes where it was pinned on each poll, and that it was dropped.
    struct Probe {
        polls: Rc<Cell<usize>>,
        address: Rc<Cell<usize>>,
        dropped: Rc<Cell<bool>>,
        value: u32,
        _pinned: PhantomPinned,
    }

    impl Future for Probe {
        type Output = u32;
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
            let address = std::ptr::from_ref(&*self) as usize;
            assert!(self.address.get() == 0 || self.address.get() == address, "the future moved while pinned");
            self.address.set(address);
            self.polls.set(self.polls.get() + 1);
            if self.polls.get() < 2 {
                cx.waker().wake_by_ref();
                Poll::Pending
            } else {
                Poll::Ready(self.value)
            }
        }
    }

    impl Drop for Probe {
        fn drop(&mut self) {
            self.dropped.set(true);
        }
    }

    fn probe(value: u32) -> (Probe, Rc<Cell<usize>>, Rc<Cell<bool>>) {
        let polls = Rc::new(Cell::new(0));
        let dropped = Rc::new(Cell::new(false));
        let probe = Probe {
            polls: polls.clone(),
            address: Rc::new(Cell::new(0)),
            dropped: dropped.clone(),
            value,
            _pinned: PhantomPinned,
        };
        (probe, polls, dropped)
    }

    #[test]
    fn the_chosen_future_is_polled_in_place_until_it_answers_and_dropped_with_the_enum() {
        let (chosen, polls, dropped) = probe(7);
        type Three = OneOf3<std::future::Ready<u32>, Probe, std::future::Pending<u32>>;
        let mut future: Pin<Box<Three>> = Box::pin(OneOf3::V1(chosen));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert_eq!(future.as_mut().poll(&mut cx), Poll::Pending);
        assert_eq!(future.as_mut().poll(&mut cx), Poll::Ready(7));
        assert_eq!(polls.get(), 2);
        assert!(!dropped.get());
        drop(future);
        assert!(dropped.get());
    }

    /// Whether a type is `Unpin`, asked without requiring it: method resolution takes `Yes`
    /// (on the value) when the type is `Unpin`, else `No` (on the reference). Works at concrete
    /// types only, hence a macro.
    struct Ask<T>(std::marker::PhantomData<T>);
    trait Yes {
        fn unpin(&self) -> bool {
            true
        }
    }
    impl<T: Unpin> Yes for Ask<T> {}
    trait No {
        fn unpin(&self) -> bool {
            false
        }
    }
    impl<T> No for &Ask<T> {}
    macro_rules! is_unpin {
        ($type:ty) => {{
            #[allow(clippy::needless_borrow, reason = "the borrow picks `No` when `Yes` does not apply")]
            let unpin = (&Ask::<$type>(std::marker::PhantomData)).unpin();
            unpin
        }};
    }

    #[test]
    fn an_enum_is_unpin_only_when_every_future_is() {
        assert!(!is_unpin!(Probe), "the probe itself is not Unpin");
        assert!(is_unpin!(OneOf2<std::future::Ready<u32>, std::future::Pending<u32>>));
        // Were it `Unpin` with a `!Unpin` future inside, safe code could move that future out of
        // a pinned enum.
        assert!(!is_unpin!(OneOf2<std::future::Ready<u32>, Probe>));
    }
}
