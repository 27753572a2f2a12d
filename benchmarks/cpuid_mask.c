/*
 * Hides instruction-set extensions from the CPUID instruction of the process it is preloaded into,
 * so that onnxruntime picks the kernels a CPU without them runs (benchmarks/_isa.py builds and
 * preloads it; benchmarks/quant.py measures int8 against fp32 under each mask).
 *
 *   CPUID_MASK=vnni    hides AVX-512 VNNI, AVX-VNNI and AMX (an AVX-512 CPU without VNNI)
 *   CPUID_MASK=avx512  hides those and every AVX-512 extension (an AVX2-only CPU)
 *
 * How: arch_prctl(ARCH_SET_CPUID, 0) makes CPUID fault in this process (Linux, on CPUs with
 * CPUID faulting: the "cpuid_fault" flag); the SIGSEGV handler runs the real CPUID with
 * faulting off, clears the hidden bits and steps over the instruction. Any other SIGSEGV
 * restores the default action and re-faults. The setting is per thread and inherited by
 * threads created later, so the library must be loaded before any thread starts
 * (LD_PRELOAD). cpuid_mask_leaf7() lets the process read what it now sees.
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#ifndef ARCH_SET_CPUID
#define ARCH_SET_CPUID 0x1012
#endif

static int hide_avx512;

static void on_sigsegv(int sig, siginfo_t *info, void *context) {
    ucontext_t *uc = context;
    greg_t *r = uc->uc_mcontext.gregs;
    const uint8_t *ip = (const uint8_t *)r[REG_RIP];
    (void)info;
    if (ip[0] != 0x0f || ip[1] != 0xa2) { /* a real fault: die of it */
        signal(sig, SIG_DFL);
        return;
    }
    uint32_t leaf = (uint32_t)r[REG_RAX], sub = (uint32_t)r[REG_RCX], a, b, c, d;
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 1);
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(leaf), "c"(sub));
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0);
    if (leaf == 7 && sub == 0) {
        c &= ~(1u << 11);                                   /* avx512_vnni */
        d &= ~((1u << 22) | (1u << 24) | (1u << 25));       /* amx_bf16, amx_tile, amx_int8 */
        if (hide_avx512) {
            b &= ~((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) |
                   (1u << 30) | (1u << 31));                /* avx512 f dq ifma pf er cd bw vl */
            c &= ~((1u << 1) | (1u << 6) | (1u << 12) | (1u << 14)); /* vbmi vbmi2 bitalg vpopcntdq */
            d &= ~((1u << 8) | (1u << 23));                 /* vp2intersect, fp16 */
        }
    }
    if (leaf == 7 && sub == 1) {
        a &= ~(1u << 4);                                    /* avx_vnni */
        if (hide_avx512) a &= ~(1u << 5);                   /* avx512_bf16 */
    }
    r[REG_RAX] = a; r[REG_RBX] = b; r[REG_RCX] = c; r[REG_RDX] = d;
    r[REG_RIP] += 2;
}

/* Leaf 7's registers as this process sees them: ebx, ecx, edx of subleaf 0, eax of subleaf 1. */
void cpuid_mask_leaf7(uint32_t out[4]) {
    uint32_t a, b, c, d;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7u), "c"(0u));
    out[0] = b; out[1] = c; out[2] = d;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7u), "c"(1u));
    out[3] = a;
}

__attribute__((constructor)) static void hide(void) {
    const char *what = getenv("CPUID_MASK");
    if (what == NULL || *what == '\0') return;
    hide_avx512 = strcmp(what, "avx512") == 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigsegv;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &sa, NULL);
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0);
}
