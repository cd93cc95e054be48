#!/bin/sh
# wordcount (lang: exec): the classic watchdog function. The request body arrives on stdin,
# whatever the process prints is the answer.
exec wc -w
