// A CPU hint for busy-wait loops (x86 `pause`, ARM `yield`): the waiting core backs off and the
// loop leaves the pipeline quickly when the awaited value changes. Swift has no spelling for it.
#ifndef PRUNEKIT_SPIN_H
#define PRUNEKIT_SPIN_H

static inline void spin_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
    __asm__ __volatile__("yield");
#endif
}

#endif
