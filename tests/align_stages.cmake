# The alignment stages end to end: pretrain a tiny model on a small corpus,
# fine-tune it on generated arithmetic conversations and require the held-out
# loss over the answers to fall (and a run resumed from its middle checkpoint
# to log the uninterrupted run's losses exactly); then DPO on pairs that
# prefer the right sum to a wrong one must bring the held-out DPO loss below
# log 2, where a policy equal to its reference stands; and a reward model
# trained on pairs that prefer a sum to a refusal must rank most held-out
# pairs right. GRPO (against the rule that checks the sum) and PPO (against
# that reward model, with and without PPO-ptx) must each resume from a middle
# checkpoint to log the uninterrupted run's losses exactly; with MPIRUN, PPO at tensor parallelism 2
# must take the steps of one process.
#   cmake -DBIN=<examples dir> -DWORK=<scratch dir> [-DCOMPARE=<compare_metrics> -DMPIRUN="<mpirun ...>"]
#         -P align_stages.cmake
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK}/text)
set(text "")
set(tasks "")
set(pairs "")
set(refusals "")
set(prompts "")
foreach(i RANGE 1 400)
  math(EXPR a "${i} % 10")
  math(EXPR b "${i} % 7")
  math(EXPR c "${a} + ${b}")
  string(APPEND text "%\nThe kiln number ${i} fires clay ${a} times and ${b} more.\n")
  math(EXPR wrong "${c} + 1 + ${i} % 3")
  string(APPEND tasks "{\"messages\": [{\"role\": \"user\", \"content\": \"${a} plus ${b}?\"}, "
                      "{\"role\": \"assistant\", \"content\": \"${c}\"}]}\n")
  string(APPEND pairs "{\"prompt\": \"${a} plus ${b}?\", \"chosen\": \"${c}\", \"rejected\": \"${wrong}\"}\n")
  if(i LESS_EQUAL 64)
    string(APPEND prompts "{\"prompt\": \"${a} plus ${b}?\", \"answer\": \"${c}\"}\n")
  endif()
  string(APPEND refusals "{\"prompt\": \"${a} plus ${b}?\", \"chosen\": \"it is ${c}.\", \"rejected\": \"no.\"}\n")
endforeach()
file(WRITE ${WORK}/text/corpus ${text})
file(WRITE ${WORK}/tasks.jsonl ${tasks})
file(WRITE ${WORK}/pairs.jsonl ${pairs})
file(WRITE ${WORK}/refusals.jsonl ${refusals})
file(WRITE ${WORK}/prompts.jsonl ${prompts})

include(${CMAKE_CURRENT_LIST_DIR}/run_program.cmake)

run(${BIN}/prepare_data --input ${WORK}/text --out ${WORK}/data --vocab 400 --sentinels 0)
run(${BIN}/train --model llama --data ${WORK}/data --out ${WORK}/pre --layers 2 --channels 32 --heads 2 --seq 32
    --batch 8 --steps 20 --eval-every 20 --sample-every 0 --checkpoint-every 20)
set(sft ${BIN}/sft --init-from ${WORK}/pre --tokenizer ${WORK}/data/tokenizer.model --data ${WORK}/tasks.jsonl
    --epochs 2 --batch 8 --lr 3e-3 --eval-every 10 --checkpoint-every 20 --log-every 10 --keep 10)
run(${sft} --out ${WORK}/sft)

function(metric_values file key out_var)
  file(STRINGS ${file} lines)
  set(found "")
  foreach(line IN LISTS lines)
    string(JSON value ERROR_VARIABLE missing GET "${line}" ${key})
    if(NOT missing)
      list(APPEND found ${value})
    endif()
  endforeach()
  set(${out_var} "${found}" PARENT_SCOPE)
endfunction()
metric_values(${WORK}/sft/metrics.jsonl val_loss val)
list(GET val 0 first)
list(GET val -1 last)
if(NOT last LESS first)
  message(FATAL_ERROR "sft: held-out loss did not fall: ${val}")
endif()
message(STATUS "sft: held-out loss over the answers ${first} -> ${last}")

# A run resumed from the checkpoint of step `at` in `from` (its subdirectories
# `sides`, or the run itself) must log the uninterrupted run's `key` exactly.
function(check_resume stage from key at)
  set(padded "000000${at}")
  string(LENGTH "${padded}" length)
  math(EXPR first "${length} - 6")
  string(SUBSTRING "${padded}" ${first} 6 padded)
  set(sides ${ARGN})
  if(NOT sides)
    set(sides .)
  endif()
  foreach(side IN LISTS sides)
    file(MAKE_DIRECTORY ${WORK}/${stage}-resumed/${side})
    file(COPY ${from}/${side}/step-${padded} DESTINATION ${WORK}/${stage}-resumed/${side})
    file(WRITE ${WORK}/${stage}-resumed/${side}/latest "step-${padded}\n")
  endforeach()
  run(${${stage}} --out ${WORK}/${stage}-resumed --resume)
  metric_values(${from}/metrics.jsonl ${key} full)
  metric_values(${WORK}/${stage}-resumed/metrics.jsonl ${key} resumed)
  list(LENGTH full n)
  list(LENGTH resumed m)
  math(EXPR skip "${n} - ${m}")
  list(SUBLIST full ${skip} ${m} tail)
  if(NOT skip EQUAL at OR NOT "${tail}" STREQUAL "${resumed}")
    message(FATAL_ERROR "${stage}: the resumed run differs:\nuninterrupted: ${tail}\nresumed:       ${resumed}")
  endif()
  message(STATUS "${stage}: resumed ${key} values are bit-identical")
endfunction()
check_resume(sft ${WORK}/sft train_loss 20)

run(${BIN}/dpo --init-from ${WORK}/sft --tokenizer ${WORK}/data/tokenizer.model --data ${WORK}/pairs.jsonl
    --out ${WORK}/dpo --epochs 2 --batch 8 --lr 1e-3 --beta 0.5 --eval-every 10 --log-every 10)
metric_values(${WORK}/dpo/metrics.jsonl val_loss dpo_val)
list(GET dpo_val -1 dpo_last)
if(NOT dpo_last LESS 0.6)
  message(FATAL_ERROR "dpo: the held-out loss stayed near log 2: ${dpo_val}")
endif()
metric_values(${WORK}/dpo/metrics.jsonl val_accuracy dpo_accuracy)
message(STATUS "dpo: held-out loss ${dpo_val}, accuracy ${dpo_accuracy}")
# RPO: at the first step the policy is its reference, so the DPO loss is
# log 2 and the rest is alpha times the chosen answers' NLL.
foreach(alpha 1 2)
  run(${BIN}/dpo --init-from ${WORK}/sft --tokenizer ${WORK}/data/tokenizer.model --data ${WORK}/pairs.jsonl
      --out ${WORK}/rpo${alpha} --max-steps 1 --batch 8 --rpo-alpha ${alpha})
  metric_values(${WORK}/rpo${alpha}/metrics.jsonl train_loss rpo${alpha}_loss)
endforeach()
if(NOT (rpo1_loss GREATER 0.6932 AND rpo2_loss GREATER rpo1_loss))
  message(FATAL_ERROR "dpo --rpo-alpha: first losses ${rpo1_loss} (alpha 1) and ${rpo2_loss} (alpha 2) are not "
                      "log 2 plus a growing NLL term")
endif()

run(${BIN}/reward --init-from ${WORK}/sft --tokenizer ${WORK}/data/tokenizer.model --data ${WORK}/refusals.jsonl
    --out ${WORK}/reward --epochs 1 --batch 8 --lr 1e-3 --eval-every 10 --log-every 10)
metric_values(${WORK}/reward/metrics.jsonl val_accuracy rm_accuracy)
list(GET rm_accuracy -1 rm_last)
if(rm_last LESS 0.8)
  message(FATAL_ERROR "reward: held-out accuracy stayed low: ${rm_accuracy}")
endif()
message(STATUS "reward: held-out accuracy ${rm_accuracy}")

# evaluate --pass-at: at temperature 0 every sample is the greedy answer, so
# pass@4 and the share of right samples are the greedy accuracy; sampled, a
# prompt is solved at least as often as a sample is right.
foreach(temperature 0 1)
  run(${BIN}/evaluate --model ${WORK}/sft --tokenizer ${WORK}/data/tokenizer.model --data ${WORK}/prompts.jsonl
      --max-new-tokens 4 --pass-at 4 --temperature ${temperature} --json ${WORK}/pass_at_${temperature}.jsonl)
  file(READ ${WORK}/pass_at_${temperature}.jsonl line)
  foreach(key accuracy pass_at_4 sample_accuracy)
    string(JSON ${key}_${temperature} GET "${line}" ${key})
  endforeach()
endforeach()
if(NOT (pass_at_4_0 EQUAL accuracy_0 AND sample_accuracy_0 EQUAL accuracy_0 AND pass_at_4_1 GREATER_EQUAL sample_accuracy_1))
  message(FATAL_ERROR "evaluate --pass-at: greedy ${accuracy_0}, at temperature 0 pass@4 ${pass_at_4_0} and samples "
                      "${sample_accuracy_0}; at 1 pass@4 ${pass_at_4_1} below samples ${sample_accuracy_1}")
endif()
message(STATUS "evaluate: greedy ${accuracy_0}; at temperature 1 pass@4 ${pass_at_4_1}, samples ${sample_accuracy_1}")

set(grpo_common ${BIN}/grpo --init-from ${WORK}/sft --tokenizer ${WORK}/data/tokenizer.model
    --data ${WORK}/prompts.jsonl --val-fraction 0.25 --group 4 --max-new-tokens 4 --lr 1e-3 --eval-every 6
    --checkpoint-every 6 --log-every 6 --keep 10)
set(grpo ${grpo_common} --batch 4)
run(${grpo} --out ${WORK}/grpo --keep-best)
check_resume(grpo ${WORK}/grpo train_loss 6)
# --keep-best: OUT/best holds the step of the best held-out accuracy (the first of equals).
file(STRINGS ${WORK}/grpo/metrics.jsonl lines)
set(best -1)
foreach(line IN LISTS lines)
  string(JSON accuracy ERROR_VARIABLE missing GET "${line}" val_accuracy)
  if(NOT missing AND accuracy GREATER best)
    set(best ${accuracy})
    string(JSON best_step GET "${line}" step)
  endif()
endforeach()
file(READ ${WORK}/grpo/best/latest kept)
string(STRIP "${kept}" kept)
string(REGEX REPLACE "^step-0*([0-9]+)$" "\\1" kept_step "${kept}")
if(NOT kept_step EQUAL best_step)
  message(FATAL_ERROR "grpo --keep-best kept ${kept}; the best held-out accuracy ${best} was at step ${best_step}")
endif()
message(STATUS "grpo --keep-best: ${kept}, held-out accuracy ${best}")

set(ppo_common ${BIN}/ppo --init-from ${WORK}/sft --reward-model ${WORK}/reward --tokenizer ${WORK}/data/tokenizer.model
    --data ${WORK}/prompts.jsonl --eval-data ${WORK}/prompts.jsonl --ppo-epochs 2 --max-new-tokens 4 --lr 1e-4
    --critic-lr 1e-4 --eval-every 4 --checkpoint-every 4 --log-every 4 --keep 10)
set(ppo ${ppo_common} --batch 8 --mini-batch 4)
run(${ppo} --out ${WORK}/ppo)
check_resume(ppo ${WORK}/ppo value_loss 4 actor critic)
# PPO-ptx: the pretraining text's position resumes too.
set(ppoptx ${ppo} --ptx-data ${WORK}/data --ptx-coef 1 --ptx-seq 16)
run(${ppoptx} --out ${WORK}/ppoptx)
check_resume(ppoptx ${WORK}/ppoptx ptx_loss 4 actor critic)

# Parallel layouts: the actor and the critic split over two tensor-parallel
# ranks, or the batch over two data-parallel ranks (the same samples: each
# row draws from its own generator), take the steps of one process.
if(DEFINED MPIRUN)
  separate_arguments(mpirun UNIX_COMMAND "${MPIRUN}")
  set(ppo_figures score,kl,policy_loss,value_loss,actor_grad_norm,critic_grad_norm,val_accuracy)
  run(${mpirun} -np 2 ${ppo} --tp 2 --out ${WORK}/ppo-tp2)
  run(${COMPARE} ${WORK}/ppo-tp2/metrics.jsonl ${WORK}/ppo/metrics.jsonl 1 1e-4 ${ppo_figures})
  # One mini-batch a step: a mini-batch of one process is then the union of the ranks'.
  run(${ppo_common} --batch 8 --mini-batch 8 --out ${WORK}/ppo-one)
  run(${mpirun} -np 2 ${ppo_common} --batch 4 --mini-batch 4 --out ${WORK}/ppo-dp2)
  run(${COMPARE} ${WORK}/ppo-dp2/metrics.jsonl ${WORK}/ppo-one/metrics.jsonl 1 1e-4 ${ppo_figures})
  run(${mpirun} -np 2 ${grpo_common} --batch 2 --out ${WORK}/grpo-dp2)
  run(${COMPARE} ${WORK}/grpo-dp2/metrics.jsonl ${WORK}/grpo/metrics.jsonl 1 1e-4 reward,train_loss,grad_norm,val_accuracy)
  message(STATUS "ppo and grpo: tensor- and data-parallel over 2 ranks equal one process")
  # Packed fine-tuning: each batch's conversations share rows, attending only
  # to themselves; the losses are those of one conversation a row.
  run(${sft} --pack --max-tokens 64 --out ${WORK}/sft-packed)
  run(${COMPARE} ${WORK}/sft-packed/metrics.jsonl ${WORK}/sft/metrics.jsonl 1 1e-4 train_loss,grad_norm,val_loss)
  message(STATUS "sft: packed rows train as one conversation a row")
endif()
