#!/bin/sh
# On a container host where the dataset is mounted at /datasets/imagenet (see
# datasets-imagenet.mount): hand it to a container read-only with a bind mount, and a
# clone namespace (writable, this host's own copy) mounted at /scratch as a second volume.
docker run --rm \
    --mount type=bind,source=/datasets/imagenet,target=/data,readonly \
    --mount type=bind,source=/scratch,target=/scratch \
    pytorch/pytorch:latest python train.py --data /data --out /scratch
