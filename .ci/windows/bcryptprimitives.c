/* Wine 8 lacks bcryptprimitives.dll, from which Rust's std for Windows
 * imports ProcessPrng: every binary dies at load without it. This DLL
 * provides ProcessPrng on top of RtlGenRandom (advapi32's
 * SystemFunction036). For running tests under Wine only; never shipped. */
#include <windows.h>

BOOLEAN NTAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!SystemFunction036(data, chunk)) return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
