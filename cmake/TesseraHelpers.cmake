# Shared CMake helpers.

# Per-file ISA flags: *_avx2.cc and *_avx512.cc are compiled for those instruction sets and are
# only entered after a run-time CPU check (kernels/cpu/cpu_features.h).
function(tessera_set_isa_flags)
  foreach(src IN LISTS ARGN)
    if(src MATCHES "_avx512\\.cc$")
      set_source_files_properties(${src} PROPERTIES COMPILE_OPTIONS
        "-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mavx512bf16;-mavx512vnni;-mavx2;-mfma;-mf16c")
    elseif(src MATCHES "_avx2\\.cc$")
      set_source_files_properties(${src} PROPERTIES COMPILE_OPTIONS "-mavx2;-mfma;-mf16c")
    endif()
  endforeach()
endfunction()
