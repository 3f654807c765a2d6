# curate end to end on a planted corpus whose every count is known by
# construction: a high-priority unfiltered source ("books", fortune files)
# with exact and edited copies of its own documents, and a filtered source
# ("web", JSON lines, one file gzipped) with short documents, symbol-heavy
# documents and copies of books' documents. Then: a run killed in the filter
# stage and one killed in the tokenize stage resume to the same files, and
# (with MPIRUN) 4 ranks write the same files as one.
#   cmake -DBIN=<examples dir> -DWORK=<scratch dir> [-DMPIRUN="mpirun ..."] -P curate.cmake
include(${CMAKE_CURRENT_LIST_DIR}/run_program.cmake)
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK}/books ${WORK}/web ${WORK}/reference)

# Document `id`: `words` pseudo-random words of 7 or 8 letters and digits, drawn from `id`.
function(document id words out_var)
  math(EXPR state "${id} * 7919 + 17")
  set(text "")
  foreach(w RANGE 1 ${words})
    math(EXPR state "(${state} * 1103515245 + 12345) % 2147483648")
    math(EXPR word "(${state} / 65536) % 20000")
    if(w EQUAL 1)
      set(text "tok${word}")
    elseif(w EQUAL 31)
      string(APPEND text "\ntok${word}")
    else()
      string(APPEND text " tok${word}")
    endif()
  endforeach()
  set(${out_var} "${text}" PARENT_SCOPE)
endfunction()

# Appends documents first..last (`words` words each) to the variable, as
# fortunes ("%" after each) or JSON lines, each changed by MATCH -> REPLACE.
function(add_documents var format first last words)
  cmake_parse_arguments(arg "" "MATCH;REPLACE" "" ${ARGN})
  set(text "${${var}}")
  foreach(id RANGE ${first} ${last})
    document(${id} ${words} doc)
    if(DEFINED arg_MATCH)
      string(REGEX REPLACE "${arg_MATCH}" "${arg_REPLACE}" doc "${doc}")
    endif()
    if(format STREQUAL json)
      string(REPLACE "\n" "\\n" doc "${doc}")
      string(APPEND text "{\"text\": \"${doc}\", \"id\": ${id}}\n")
    else()
      string(APPEND text "${doc}\n%\n")
    endif()
  endforeach()
  set(${var} "${text}" PARENT_SCOPE)
endfunction()

# books: 120 distinct documents (0..119), then exact copies of 0..9 and
# copies of 10..19 with the last word changed (Jaccard 55/57 of 5-word
# shingles: LSH makes them candidates with probability 0.9999); each file
# ends in "%", after which an empty document.
set(part0 "")
add_documents(part0 fortune 0 59 60)
file(WRITE ${WORK}/books/part0 "${part0}")
set(part1 "")
add_documents(part1 fortune 60 119 60)
add_documents(part1 fortune 0 9 60)
add_documents(part1 fortune 10 19 60 MATCH "[^ \n]+$" REPLACE "edited")
file(WRITE ${WORK}/books/part1 "${part1}")

# web: 40 fresh documents, copies of books' 20..24, 6 too short, 4 with a
# "#" in every fifth word; another 10 fresh ones gzipped.
set(a "")
add_documents(a json 1000 1039 60)
add_documents(a json 20 24 60)
add_documents(a json 2000 2005 10)
string(REPEAT "[^ \n]+[ \n]" 4 four_words)  # CMake's regular expressions have no {4}
add_documents(a json 3000 3003 60 MATCH "(${four_words})[^ \n]+" REPLACE "\\1#")
file(WRITE ${WORK}/web/a.jsonl "${a}")
set(b "")
add_documents(b json 4000 4009 60)
file(WRITE ${WORK}/b.jsonl "${b}")
file(ARCHIVE_CREATE OUTPUT ${WORK}/web/b.jsonl.gz PATHS ${WORK}/b.jsonl FORMAT raw COMPRESSION GZip)

set(reference "")
add_documents(reference fortune 5000 5029 60)
file(WRITE ${WORK}/reference/good "${reference}")

set(curate ${BIN}/curate --source books=${WORK}/books --source web=${WORK}/web --unfiltered books
    --weight books=3 --weight web=1 --reference ${WORK}/reference --alpha 1e-6 --vocab 400 --val-fraction 0.1)
run(${curate} --out ${WORK}/one)

function(expect json_file expected)
  file(READ ${json_file} json)
  foreach(pair IN LISTS expected)
    string(REPLACE "=" ";" pair "${pair}")
    list(GET pair 0 path)
    list(GET pair 1 want)
    string(REPLACE "." ";" keys "${path}")
    string(JSON got GET "${json}" ${keys})
    if(NOT got STREQUAL want)
      message(FATAL_ERROR "${json_file}: ${path} is ${got}, expected ${want}")
    endif()
  endforeach()
endfunction()
expect(${WORK}/one/report.json
       "sources.books.documents=142;sources.books.empty=2;sources.books.kept=140;sources.web.documents=65;sources.web.rules.0=6;sources.web.rules.3=4;sources.web.low_quality=0;sources.web.kept=55;dedup.dropped=25;dedup.exact_copies=15;dedup.dropped_per_source.books=20;dedup.dropped_per_source.web=5;dedup.clusters=25")
expect(${WORK}/one/mixture.json "sources.0.name=books;sources.0.documents=120;sources.0.weight=0.75;sources.1.name=web;sources.1.documents=50;sources.1.weight=0.25")
# The token files hold what the mixture says (uint16 after llm.c's 1024-byte header).
file(READ ${WORK}/one/mixture.json mixture)
foreach(s 0 1)
  string(JSON name GET "${mixture}" sources ${s} train)
  string(JSON tokens GET "${mixture}" sources ${s} tokens)
  file(SIZE ${WORK}/one/${name} bytes)
  math(EXPR expected "1024 + 2 * ${tokens}")
  if(NOT bytes EQUAL expected)
    message(FATAL_ERROR "${name}: ${bytes} bytes for ${tokens} tokens")
  endif()
endforeach()

set(outputs mixture.json val.bin train-books.bin train-web.bin report.json)
function(same_outputs run)
  foreach(f IN LISTS outputs)
    execute_process(COMMAND ${CMAKE_COMMAND} -E compare_files ${WORK}/one/${f} ${WORK}/${run}/${f} RESULT_VARIABLE differ)
    if(differ)
      message(FATAL_ERROR "${run}/${f} differs from the single run's")
    endif()
  endforeach()
endfunction()

# Killed while filtering: web's files undone (one half written), nothing after.
file(COPY ${WORK}/one/ DESTINATION ${WORK}/killed_filtering)
set(k ${WORK}/killed_filtering)
file(GLOB later ${k}/work/*.tokens.json ${k}/work/*.train ${k}/work/*.val ${k}/work/dedup.json ${k}/work/dropped.bin
     ${k}/work/2.json ${k}/work/3.json ${k}/work/3.docs ${k}/tokenizer.model ${k}/*.bin ${k}/*.json ${k}/report.md)
file(REMOVE ${later})
file(WRITE ${k}/work/3.docs.tmp "half a file")
run(${curate} --out ${k})
# Killed while tokenizing: one file's tokens undone, no outputs.
file(COPY ${WORK}/one/ DESTINATION ${WORK}/killed_tokenizing)
set(k ${WORK}/killed_tokenizing)
file(GLOB later ${k}/work/1.tokens.json ${k}/*.bin ${k}/*.json ${k}/report.md)
file(REMOVE ${later})
run(${curate} --out ${k})
same_outputs(killed_filtering)
same_outputs(killed_tokenizing)

# Training on the mixture: rows by weight, tokens seen per source, and a run
# resumed at step 3 reads and learns exactly what the uninterrupted one did.
set(train ${BIN}/train --data ${WORK}/one --layers 1 --channels 32 --heads 2 --seq 16 --batch 4 --steps 6 --warmup 2
    --eval-every 3 --eval-batches 1 --sample-every 0 --checkpoint-every 3 --keep 5 --mixture-weight web=0.5)
run(${train} --out ${WORK}/train/full)
file(MAKE_DIRECTORY ${WORK}/train/resumed)
file(COPY ${WORK}/train/full/step-000003 DESTINATION ${WORK}/train/resumed)
file(WRITE ${WORK}/train/resumed/latest "step-000003\n")
run(${train} --out ${WORK}/train/resumed --resume)
foreach(run full resumed)
  file(STRINGS ${WORK}/train/${run}/metrics.jsonl lines)
  list(FILTER lines INCLUDE REGEX "\"step\":[456],")
  list(TRANSFORM lines REPLACE "\"tokens_per_second\":[^,}]*,?" "")
  set(${run} "${lines}")
endforeach()
if(NOT full STREQUAL resumed OR NOT resumed MATCHES "\"tokens_seen\":{\"books\":[0-9]+,\"web\":[0-9]+}")
  message(FATAL_ERROR "the resumed mixture differs:\nuninterrupted: ${full}\nresumed:       ${resumed}")
endif()
# The tokens seen count every row of the 6 steps (24 rows of 16 tokens).
string(REGEX MATCH "\"step\":6,.*\"tokens_seen\":{\"books\":([0-9]+),\"web\":([0-9]+)}" _ "${full}")
math(EXPR rows "(${CMAKE_MATCH_1} + ${CMAKE_MATCH_2}) / 16")
if(NOT rows EQUAL 24)
  message(FATAL_ERROR "6 steps of 4 rows read ${rows} rows: ${full}")
endif()

# A resumed run must be the same run.
execute_process(COMMAND ${curate} --out ${WORK}/one --seed 7 RESULT_VARIABLE rc ERROR_VARIABLE err)
if(rc EQUAL 0 OR NOT err MATCHES "holds a run with other settings")
  message(FATAL_ERROR "curate resumed a run with other settings (${rc}): ${err}")
endif()

if(MPIRUN)
  separate_arguments(mpirun UNIX_COMMAND "${MPIRUN}")
  run(${mpirun} -np 4 ${curate} --out ${WORK}/four)
  list(REMOVE_ITEM outputs report.json)  # its count of compared pairs depends on the ranks
  same_outputs(four)
  expect(${WORK}/four/report.json "dedup.dropped=25;dedup.exact_copies=15;dedup.clusters=25")
endif()
