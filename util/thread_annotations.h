// Clang thread-safety annotations: lock rules the compiler checks.
//
// With clang and -Wthread-safety (the top CMakeLists.txt adds it), a field
// marked GUARDED_BY(mu_) may only be touched with mu_ held, a function marked
// REQUIRES(mu_) may only be called with it held, and so on; a violation is a
// warning (an error with HBISS_WERROR). Other compilers see empty macros.
// The capability types to use them with are in util/mutex.h.
//
// See https://clang.llvm.org/docs/ThreadSafetyAnalysis.html. The analysis is
// intraprocedural and does not look inside lambdas: a lambda that touches a
// guarded field needs its own annotation or must take the lock itself.
#pragma once

#if defined(__clang__)
#define HBISS_THREAD_ANNOTATION_ATTRIBUTE(x) __attribute__((x))
#else
#define HBISS_THREAD_ANNOTATION_ATTRIBUTE(x)  // no-op
#endif

// The class is a capability (a lock type); `x` names it in diagnostics.
#define CAPABILITY(x) HBISS_THREAD_ANNOTATION_ATTRIBUTE(capability(x))

// The class is an RAII object that holds a capability for its lifetime.
#define SCOPED_CAPABILITY HBISS_THREAD_ANNOTATION_ATTRIBUTE(scoped_lockable)

// The field may only be read or written with capability `x` held.
#define GUARDED_BY(x) HBISS_THREAD_ANNOTATION_ATTRIBUTE(guarded_by(x))

// The data the pointer field points to is guarded by `x` (the pointer itself
// is not).
#define PT_GUARDED_BY(x) HBISS_THREAD_ANNOTATION_ATTRIBUTE(pt_guarded_by(x))

// Lock ordering: this capability is taken before / after the listed ones.
#define ACQUIRED_BEFORE(...) HBISS_THREAD_ANNOTATION_ATTRIBUTE(acquired_before(__VA_ARGS__))
#define ACQUIRED_AFTER(...) HBISS_THREAD_ANNOTATION_ATTRIBUTE(acquired_after(__VA_ARGS__))

// The caller must hold the capabilities (exclusively / at least shared).
#define REQUIRES(...) HBISS_THREAD_ANNOTATION_ATTRIBUTE(requires_capability(__VA_ARGS__))
#define REQUIRES_SHARED(...) \
  HBISS_THREAD_ANNOTATION_ATTRIBUTE(requires_shared_capability(__VA_ARGS__))

// The function acquires / releases the capabilities (with no argument, on a
// capability class: `this`; on a scoped class: what the constructor took).
#define ACQUIRE(...) HBISS_THREAD_ANNOTATION_ATTRIBUTE(acquire_capability(__VA_ARGS__))
#define ACQUIRE_SHARED(...) \
  HBISS_THREAD_ANNOTATION_ATTRIBUTE(acquire_shared_capability(__VA_ARGS__))
#define RELEASE(...) HBISS_THREAD_ANNOTATION_ATTRIBUTE(release_capability(__VA_ARGS__))
#define RELEASE_SHARED(...) \
  HBISS_THREAD_ANNOTATION_ATTRIBUTE(release_shared_capability(__VA_ARGS__))

// The function acquires the capability when it returns the first argument
// (true or false), e.g. TRY_ACQUIRE(true).
#define TRY_ACQUIRE(...) HBISS_THREAD_ANNOTATION_ATTRIBUTE(try_acquire_capability(__VA_ARGS__))
#define TRY_ACQUIRE_SHARED(...) \
  HBISS_THREAD_ANNOTATION_ATTRIBUTE(try_acquire_shared_capability(__VA_ARGS__))

// The caller must NOT hold the capabilities (the function takes them).
#define EXCLUDES(...) HBISS_THREAD_ANNOTATION_ATTRIBUTE(locks_excluded(__VA_ARGS__))

// The function checks (at run time, or by contract) that the capability is
// held; the analysis assumes it is afterwards.
#define ASSERT_CAPABILITY(x) HBISS_THREAD_ANNOTATION_ATTRIBUTE(assert_capability(x))
#define ASSERT_SHARED_CAPABILITY(x) HBISS_THREAD_ANNOTATION_ATTRIBUTE(assert_shared_capability(x))

// The function returns a reference to capability `x` (an accessor for a lock).
#define RETURN_CAPABILITY(x) HBISS_THREAD_ANNOTATION_ATTRIBUTE(lock_returned(x))

// Turns the analysis off for one function. Use sparingly, with a comment that
// says why the function is safe.
#define NO_THREAD_SAFETY_ANALYSIS HBISS_THREAD_ANNOTATION_ATTRIBUTE(no_thread_safety_analysis)
