#!/bin/sh
# Configure a minimal FFmpeg for the worker image: what docs/media.md accepts, what
# transcoder/media (ffmpeg.py, hls.py, probe.py, verify.py) runs, and the measuring filters the corpus
# test uses. Everything else is disabled; accepting a new input format is one name here plus a
# corpus case. Run it from the unpacked FFmpeg source tree. Linked against Debian's libx264 and
# libzimg, zlib (compressed MOV/MKV headers) and GnuTLS (https, for
# TRANSCODER_SOURCE_ACCESS=presigned; the default gateway mode reads http://127.0.0.1).
set -eu

# Containers: MP4/MOV/3GP, MKV/WebM, MPEG-TS, MPEG-PS, AVI, FLV, Ogg, and raw elementary streams;
# JPEG files (image2, jpeg_pipe), so the image's ffprobe can read the posters and sprites it made.
# concat: the stitch of a chunked job joins its chunk MP4s with the ffconcat demuxer.
DEMUXERS=mov,matroska,mpegts,mpegps,mpegvideo,avi,flv,ogg,h264,hevc,m4v,mp3,aac,ac3,eac3,wav,flac,\
image2,jpeg_pipe,concat
VIDEO_DECODERS=h264,hevc,vp8,vp9,mpeg1video,mpeg2video,mpeg4,h263,msmpeg4v3,mjpeg,theora,prores
AUDIO_DECODERS=aac,aac_latm,mp1,mp2,mp3,ac3,eac3,opus,vorbis,flac,alac,amrnb,amrwb,dca,\
pcm_s16le,pcm_s16be,pcm_s24le,pcm_s24be,pcm_s32le,pcm_f32le,pcm_u8,pcm_alaw,pcm_mulaw
PARSERS=h264,hevc,vp8,vp9,mpegvideo,mpeg4video,h263,mjpeg,aac,aac_latm,mpegaudio,ac3,opus,\
vorbis,flac,dca
# x264 + AAC through the tee muxer into MP4 and HLS (hls writes its fMP4 segments through the
# mov muxer, which configure selects with it); the poster and the thumbnail sprite as JPEG
# (mjpeg through image2); null and framemd5 (with their default encoders) for measuring.
ENCODERS=libx264,aac,mjpeg,wrapped_avframe,rawvideo,pcm_s16le
MUXERS=mp4,mov,tee,hls,image2,null,framemd5
# The worker's graph (split, scale, setsar, format, bwdif, fps, zscale, tonemap; for the stills
# select, blackframe, entropy, metadata, thumbnail, tile, concat); what the ffmpeg CLI inserts
# (aresample/aformat for -ac 2, trim for -t, transpose/hflip/vflip for autorotate); the corpus
# test's measuring filters (signalstats, metadata, idet, volumedetect).
FILTERS=split,asplit,scale,setsar,format,aformat,aresample,bwdif,yadif,fps,zscale,tonemap,\
null,anull,trim,atrim,setpts,asetpts,transpose,hflip,vflip,copy,crop,pad,signalstats,metadata,\
ametadata,idet,volumedetect,showinfo,select,blackframe,entropy,thumbnail,tile,concat
PROTOCOLS=file,pipe,http,https,tcp,tls

exec ./configure \
  --prefix="${PREFIX:-/opt/ffmpeg}" \
  --enable-gpl --enable-libx264 --enable-libzimg --enable-zlib --enable-gnutls \
  --disable-autodetect --disable-everything --disable-doc --disable-debug --disable-ffplay \
  --enable-demuxer="$DEMUXERS" \
  --enable-decoder="$VIDEO_DECODERS,$AUDIO_DECODERS" \
  --enable-parser="$PARSERS" \
  --enable-encoder="$ENCODERS" \
  --enable-muxer="$MUXERS" \
  --enable-filter="$FILTERS" \
  --enable-protocol="$PROTOCOLS" \
  --enable-bsf=h264_mp4toannexb,hevc_mp4toannexb,vp9_superframe_split,aac_adtstoasc,extract_extradata
