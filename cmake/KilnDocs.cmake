# cmake --build <dir> --target docs: the API reference of the public headers
# (Doxygen), in <dir>/docs/html, with getting-started.md as its front page.
# Doxygen warns for every public name left undocumented (<dir>/docs/warnings.txt).
find_package(Doxygen QUIET)
if(NOT DOXYGEN_FOUND)
  return()
endif()
set(DOXYGEN_PROJECT_NAME kiln)
set(DOXYGEN_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/docs)
set(DOXYGEN_FILE_PATTERNS *.h *.md)
set(DOXYGEN_RECURSIVE YES)
# Implementation, not API: the details, a tensor's insides, fmt's formatters.
set(DOXYGEN_EXCLUDE_SYMBOLS detail *::detail kiln::TensorImpl kiln::AutogradMeta kiln::ComputeCopy fmt)
set(DOXYGEN_WARN_IF_UNDOCUMENTED YES)
# A comment over several declarations documents each (scripts/doxygen-filter).
set(DOXYGEN_DISTRIBUTE_GROUP_DOC YES)
set(DOXYGEN_WARN_LOGFILE ${CMAKE_BINARY_DIR}/docs/warnings.txt)
set(DOXYGEN_GENERATE_LATEX NO)
set(DOXYGEN_QUIET YES)
set(DOXYGEN_USE_MDFILE_AS_MAINPAGE ${PROJECT_SOURCE_DIR}/docs/getting-started.md)
set(DOXYGEN_FILTER_PATTERNS "*.h=${PROJECT_SOURCE_DIR}/scripts/doxygen-filter")
doxygen_add_docs(docs ${KILN_INCLUDE_DIRS} ${PROJECT_SOURCE_DIR}/docs/getting-started.md
                 COMMENT "kiln's API reference in ${CMAKE_BINARY_DIR}/docs/html")
