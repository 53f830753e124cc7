"""Post-pretraining and finetuning of stanchat models, and the synthetic video world they are tested on."""
