# End to end through the example programs, for GPT-2 and for Llama: prepare a
# small corpus, train 8 steps with a checkpoint at step 4, resume a copy of the
# run from step 4, and require the losses of steps 5..8 to be bit-identical.
# The same for BERT's, T5's and GLM's pre-training (6 steps, resumed at 3).
#   cmake -DBIN=<examples dir> -DWORK=<scratch dir> -P lm_resume.cmake
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK}/text)
set(text "")
foreach(i RANGE 1 600)
  math(EXPR a "${i} % 7")
  math(EXPR b "${i} % 11")
  string(APPEND text "%\nThe kiln number ${i} fires clay ${a} times.\nIt cools ${b} hours, then sings.\n")
endforeach()
file(WRITE ${WORK}/text/corpus ${text})

include(${CMAKE_CURRENT_LIST_DIR}/run_program.cmake)

run(${BIN}/prepare_data --input ${WORK}/text --out ${WORK}/data --vocab 400)
# Compare everything but the timing.
function(losses file out_var)
  file(STRINGS ${file} lines)
  set(kept "")
  foreach(line IN LISTS lines)
    string(REGEX REPLACE "\"tokens_per_second\":[^,}]*,?" "" line "${line}")
    list(APPEND kept "${line}")
  endforeach()
  set(${out_var} "${kept}" PARENT_SCOPE)
endfunction()

# A copy of run's full/<step> as the only checkpoint of run's resumed/.
function(resume_copy run step)
  file(MAKE_DIRECTORY ${WORK}/${run}/resumed)
  file(COPY ${WORK}/${run}/full/${step} DESTINATION ${WORK}/${run}/resumed)
  file(WRITE ${WORK}/${run}/resumed/latest "${step}\n")
endfunction()

foreach(model gpt2 llama)
  set(train ${BIN}/train --model ${model} --data ${WORK}/data --layers 2 --channels 32 --heads 2 --seq 16 --batch 4
      --steps 8 --warmup 2 --dropout 0.1 --eval-every 4 --eval-batches 2 --sample-every 0 --checkpoint-every 4 --keep 5)
  if(model STREQUAL llama)
    list(APPEND train --kv-heads 1 --recompute)
  endif()
  run(${train} --out ${WORK}/${model}/full)
  resume_copy(${model} step-000004)
  run(${train} --out ${WORK}/${model}/resumed --resume)

  losses(${WORK}/${model}/full/metrics.jsonl full)
  losses(${WORK}/${model}/resumed/metrics.jsonl resumed)
  list(SUBLIST full 4 4 full_tail)
  list(LENGTH resumed n)
  if(NOT n EQUAL 4 OR NOT "${full_tail}" STREQUAL "${resumed}")
    message(FATAL_ERROR "${model}: resumed run differs:\nuninterrupted: ${full_tail}\nresumed:       ${resumed}")
  endif()
  message(STATUS "${model}: resumed losses are bit-identical: ${resumed}")
endforeach()

# Pre-training: each objective's corruption, dropout and data order resume exactly.
foreach(model bert t5 glm)
  set(pretrain ${BIN}/pretrain --model ${model} --data ${WORK}/data --layers 2 --channels 32 --heads 2 --seq 18
      --batch 4 --steps 6 --warmup 2 --dropout 0.1 --eval-every 3 --eval-batches 2 --checkpoint-every 3 --keep 5)
  run(${pretrain} --out ${WORK}/${model}/full)
  resume_copy(${model} step-000003)
  run(${pretrain} --out ${WORK}/${model}/resumed --resume)
  file(STRINGS ${WORK}/${model}/full/metrics.jsonl full)
  file(STRINGS ${WORK}/${model}/resumed/metrics.jsonl resumed)
  list(SUBLIST full 3 3 full_tail)
  if(NOT "${full_tail}" STREQUAL "${resumed}")
    message(FATAL_ERROR "${model}: resumed pre-training differs:\nuninterrupted: ${full_tail}\nresumed:       ${resumed}")
  endif()
  message(STATUS "${model}: resumed pre-training is bit-identical: ${resumed}")
endforeach()

