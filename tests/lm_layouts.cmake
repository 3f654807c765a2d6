# The trainer under every kind of layout on 4 ranks gives the single-process
# run's losses and gradient norms (to float32 rounding), and checkpoints cross
# layouts: a tp=2 x pp=2 (sequence parallel) checkpoint resumes on one process, a one-process
# checkpoint resumes at tp=4 and at pp=4 (GPipe), and a tp=2 x dp=2 ZeRO-1
# run (each replica half the batch) matches and resumes on one process. Llama
# (grouped-query heads split across tp 2), its LoRA fine-tuning, OPT, GPT-NeoX and BLOOM at
# tp=2 x pp=2 match one process and resume on one process; so does a Llama with MoE layers, and expert
# parallelism matches data parallelism without it; BERT, T5 and GLM
# pre-training at tp 2 x dp 2 (BERT and GLM also at pp 2 x dp 2) match one
# process.
#   cmake -DBIN=<examples dir> -DCOMPARE=<compare_metrics> -DMPIRUN="<mpirun ...>" -DWORK=<dir> -P lm_layouts.cmake
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK}/text)
set(text "")
foreach(i RANGE 1 400)
  math(EXPR a "${i} % 7")
  math(EXPR b "${i} % 13")
  string(APPEND text "%\nKiln ${i} holds ${a} pots at ${b} hundred degrees.\n")
endforeach()
file(WRITE ${WORK}/text/corpus ${text})
separate_arguments(mpirun UNIX_COMMAND "${MPIRUN}")

include(${CMAKE_CURRENT_LIST_DIR}/run_program.cmake)

function(resume_from checkpoint out)
  file(MAKE_DIRECTORY ${WORK}/${out})
  file(COPY ${WORK}/${checkpoint} DESTINATION ${WORK}/${out})
  get_filename_component(name ${checkpoint} NAME)
  file(WRITE ${WORK}/${out}/latest "${name}\n")
endfunction()

run(${BIN}/prepare_data --input ${WORK}/text --out ${WORK}/data --vocab 400)
set(common ${BIN}/train --data ${WORK}/data --layers 4 --channels 32 --heads 4 --seq 16 --grad-accum 2
    --steps 6 --warmup 2 --eval-every 3 --sample-every 0 --checkpoint-every 3 --keep 5)
set(train ${common} --batch 4 --eval-batches 2)
run(${train} --out ${WORK}/one)
run(${mpirun} -np 4 ${train} --tp 2 --pp 2 --sequence-parallel --out ${WORK}/tp2pp2)
resume_from(tp2pp2/step-000003 tp2pp2_on_one)
run(${train} --out ${WORK}/tp2pp2_on_one --resume)
resume_from(one/step-000003 one_on_tp4)
run(${mpirun} -np 4 ${train} --tp 4 --out ${WORK}/one_on_tp4 --resume)
resume_from(one/step-000003 one_on_pp4)
run(${mpirun} -np 4 ${train} --pp 4 --schedule gpipe --out ${WORK}/one_on_pp4 --resume)

# Data parallel: two replicas of batch 4 read what one process reads with batch 8.
run(${common} --batch 8 --eval-batches 2 --out ${WORK}/one_b8)
run(${mpirun} -np 4 ${common} --batch 4 --eval-batches 4 --tp 2 --zero1 --out ${WORK}/tp2dp2_zero1)
resume_from(tp2dp2_zero1/step-000003 zero1_on_one)
run(${common} --batch 8 --eval-batches 2 --out ${WORK}/zero1_on_one --resume)

# The trainer command in ARGN as <name>_one and at tp=2 x pp=2 (<name>_tp2pp2),
# whose step-3 checkpoint resumes on one process: both match <name>_one.
function(tp2pp2_like_one name)
  run(${ARGN} --out ${WORK}/${name}_one)
  run(${mpirun} -np 4 ${ARGN} --tp 2 --pp 2 --out ${WORK}/${name}_tp2pp2)
  resume_from(${name}_tp2pp2/step-000003 ${name}_tp2pp2_on_one)
  run(${ARGN} --out ${WORK}/${name}_tp2pp2_on_one --resume)
  foreach(other ${name}_tp2pp2 ${name}_tp2pp2_on_one)
    run(${COMPARE} ${WORK}/${other}/metrics.jsonl ${WORK}/${name}_one/metrics.jsonl 1 1e-5)
  endforeach()
endfunction()

set(llama ${train} --model llama --kv-heads 2 --z-loss 1e-2)  # PaLM's z-loss: fused, and vocab-parallel at tp 2
tp2pp2_like_one(llama ${llama})
# LoRA fine-tuning of that Llama (adapters on q, v and down, the base frozen;
# no adapter dropout, whose masks differ between layouts) at tp=2 x pp=2
# matches one process, and its checkpoint (base + PEFT adapter) resumes on one.
tp2pp2_like_one(lora ${llama} --init-from ${WORK}/llama_one/step-000006 --lora-rank 4 --lora-targets q,v,down
                --lora-dropout 0)
# OPT (positions two rows on, a ReLU MLP), GPT-NeoX (parallel attention
# and MLP, partial rotary) and BLOOM (ALiBi, each rank its heads' slopes, a norm
# on the embeddings) likewise.
foreach(family opt neox bloom)
  tp2pp2_like_one(${family} ${train} --model ${family})
endforeach()

# Mixture of experts at tp=2 x pp=2 (the experts whole on both tensor-parallel
# ranks, MoE layers on both stages), with both auxiliary losses: dropless, and
# at a capacity where tokens drop. Routing is discontinuous: float32 rounding
# that differs between layouts may flip a near-tie drop, so that comparison
# allows 1e-4.
set(moe ${train} --model llama --moe-experts 4 --moe-every 2 --moe-z-loss-coeff 1e-3)
set(moe_keys train_loss,grad_norm,val_loss,moe_aux_loss,moe_z_loss,moe_dropped)
foreach(capacity 0 1.25)
  run(${moe} --capacity-factor ${capacity} --out ${WORK}/moe_${capacity}_one)
  run(${mpirun} -np 4 ${moe} --capacity-factor ${capacity} --tp 2 --pp 2 --out ${WORK}/moe_${capacity}_tp2pp2)
endforeach()
run(${COMPARE} ${WORK}/moe_0_tp2pp2/metrics.jsonl ${WORK}/moe_0_one/metrics.jsonl 1 1e-5 ${moe_keys})
run(${COMPARE} ${WORK}/moe_1.25_tp2pp2/metrics.jsonl ${WORK}/moe_1.25_one/metrics.jsonl 1 1e-4 ${moe_keys})

# Expert parallelism: dp 4 with ep 4 and ep 2, dropless and at a capacity
# where tokens drop, and tp 2 x dp 2 and pp 2 x dp 2 with ep 2, take the steps of the same
# layout without it (the balancing loss is each replica's, ep or not); an ep 4
# checkpoint resumes at dp 4 without it. Against one process: without the
# balancing loss (whose batch statistics are per replica), dp 4 x ep 4 on
# batches of 4 is one process on batches of 16.
set(ep_keys train_loss,grad_norm,val_loss,moe_aux_loss,moe_z_loss,moe_dropped)
foreach(capacity 0 1.25)
  foreach(ep 1 4)
    run(${mpirun} -np 4 ${moe} --capacity-factor ${capacity} --ep ${ep} --out ${WORK}/dp4_ep${ep}_${capacity})
  endforeach()
  run(${COMPARE} ${WORK}/dp4_ep4_${capacity}/metrics.jsonl ${WORK}/dp4_ep1_${capacity}/metrics.jsonl 1 1e-5 ${ep_keys})
endforeach()
run(${mpirun} -np 4 ${moe} --ep 2 --out ${WORK}/dp4_ep2)
run(${mpirun} -np 4 ${moe} --tp 2 --out ${WORK}/tp2dp2_moe)
run(${mpirun} -np 4 ${moe} --tp 2 --ep 2 --out ${WORK}/tp2dp2_ep2)
run(${COMPARE} ${WORK}/dp4_ep2/metrics.jsonl ${WORK}/dp4_ep1_0/metrics.jsonl 1 1e-5 ${ep_keys})
run(${COMPARE} ${WORK}/tp2dp2_ep2/metrics.jsonl ${WORK}/tp2dp2_moe/metrics.jsonl 1 1e-5 ${ep_keys})
# With pipeline stages: pp 2 x dp 2 with ep 2 holds the replicas of tp 2 x dp 2.
run(${mpirun} -np 4 ${moe} --pp 2 --ep 2 --out ${WORK}/pp2dp2_ep2)
run(${COMPARE} ${WORK}/pp2dp2_ep2/metrics.jsonl ${WORK}/tp2dp2_moe/metrics.jsonl 1 1e-5 ${ep_keys})
resume_from(dp4_ep4_0/step-000003 ep4_on_dp4)
run(${mpirun} -np 4 ${moe} --out ${WORK}/ep4_on_dp4 --resume)
run(${COMPARE} ${WORK}/ep4_on_dp4/metrics.jsonl ${WORK}/dp4_ep1_0/metrics.jsonl 4 1e-5 ${ep_keys})
set(no_balance ${common} --model llama --moe-experts 4 --moe-every 2 --moe-z-loss-coeff 1e-3 --moe-aux-loss-coeff 0)
run(${no_balance} --batch 16 --eval-batches 1 --out ${WORK}/moe_one_b16)
run(${mpirun} -np 4 ${no_balance} --batch 4 --eval-batches 4 --ep 4 --out ${WORK}/moe_dp4_ep4_b4)
run(${COMPARE} ${WORK}/moe_dp4_ep4_b4/metrics.jsonl ${WORK}/moe_one_b16/metrics.jsonl 1 1e-5
    train_loss,grad_norm,val_loss,moe_z_loss,moe_dropped)

# BERT's masked LM, T5's span corruption and GLM's blank infilling: tp 2 x
# dp 2 on batches of 4 takes the steps of one process on batches of 8 (each
# row corrupted from its place in the whole batch, every row weighing the
# same in the loss), and so does pp 2 x dp 2 in micro-batches of 2 for BERT
# and GLM; a tp 2 x dp 2 checkpoint resumes on one process.
set(encoder_keys train_loss,grad_norm,val_loss)
foreach(model bert t5 glm)
  set(pretrain ${BIN}/pretrain --model ${model} --data ${WORK}/data --layers 2 --channels 32 --heads 4 --seq 18
      --steps 6 --warmup 2 --eval-every 3 --eval-batches 2 --dropout 0 --checkpoint-every 3)
  run(${pretrain} --batch 8 --out ${WORK}/${model}_one)
  run(${mpirun} -np 4 ${pretrain} --batch 4 --tp 2 --out ${WORK}/${model}_tp2dp2)
  resume_from(${model}_tp2dp2/step-000003 ${model}_tp2dp2_on_one)
  run(${pretrain} --batch 8 --out ${WORK}/${model}_tp2dp2_on_one --resume)
  set(layouts tp2dp2 tp2dp2_on_one)
  if(NOT model STREQUAL t5)
    run(${mpirun} -np 4 ${pretrain} --batch 4 --pp 2 --microbatches 2 --out ${WORK}/${model}_pp2dp2)
    list(APPEND layouts pp2dp2)
  endif()
  set(metric span_accuracy)
  if(model STREQUAL bert)
    set(metric masked_accuracy)
  endif()
  foreach(layout ${layouts})
    run(${COMPARE} ${WORK}/${model}_${layout}/metrics.jsonl ${WORK}/${model}_one/metrics.jsonl 1 1e-5
        ${encoder_keys},${metric},val_${metric})
  endforeach()
endforeach()

foreach(other tp2pp2 tp2pp2_on_one one_on_tp4 one_on_pp4)
  run(${COMPARE} ${WORK}/${other}/metrics.jsonl ${WORK}/one/metrics.jsonl 1 1e-5)
endforeach()
foreach(other tp2dp2_zero1 zero1_on_one)
  run(${COMPARE} ${WORK}/${other}/metrics.jsonl ${WORK}/one_b8/metrics.jsonl 1 1e-5)
endforeach()
message(STATUS "every layout and resumed layout matches the single-process run")
